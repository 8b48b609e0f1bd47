"""``finetune``'s per-epoch log in OUT.train/: one row per epoch (epoch, step, lr, loss, dev F1,
frames/s, seconds), exactly one per epoch after a kill between the log and the checkpoint, and
progress inside an epoch (batches, frames/s)."""

import csv
import json

import pytest

from pipeline import io
from pipeline.epoch_log import CSV, JSONL
from pipeline.features.weights_record import WEIGHTS_NAME
from pipeline.finetune.config import build_config
from pipeline.finetune.loop import work_dir
from stages.finetune import finetune

SETS = ["epochs=2", "patience=2", "batch_size=16", "model=test_resnet"]


def _rows(out):
    folder = work_dir(out)
    rows = [json.loads(line) for line in (folder / JSONL).read_text().splitlines()]
    with open(folder / CSV, newline="") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [r["epoch"] for r in rows]
    return rows


def _no_clock(rows):
    return [{k: v for k, v in r.items() if k not in ("s", "frames_per_s")} for r in rows]


def test_a_row_per_epoch_with_step_lr_and_progress_inside_the_epoch(demo_manifests, tmp_path):
    events = []
    out = tmp_path / "out"
    finetune(build_config(demo_manifests, sets=[*SETS, "epochs=1"]), out, progress=events.append)
    (row,) = _rows(out)
    assert not list(out.glob("epochs.*"))  # never in the weights folder (stage one's cache key)
    (entry,) = json.loads((work_dir(out) / "history.json").read_text())["epochs"]
    assert row["epoch"] == 1 and row["loss"] == entry["loss"] and row["dev_f1"] == entry["dev_f1"]
    assert row["s"] == entry["s"] and row["frames_per_s"] > 0
    assert row["lr"] == 1e-4 and (row["lr_min"], row["lr_max"]) == (1e-4, 1e-3)  # head_lr
    batches = [e for e in events if e.task == "batches"]
    (start,) = [e for e in batches if e.total is not None]
    assert sum(e.advance for e in batches) == start.total == row["step"]  # a step per batch
    assert all(e.info["frames/s"] > 0 for e in batches if e.advance)
    (epoch,) = [e for e in events if e.task == "epochs" and e.info]
    assert epoch.info["lr"] == 1e-4 and epoch.info["frames_per_s"] > 0  # the terminal's line


@pytest.mark.slow
def test_one_row_per_epoch_after_a_kill_between_log_and_checkpoint(demo_manifests, tmp_path,
                                                                    monkeypatch):
    whole = tmp_path / "whole"
    finetune(build_config(demo_manifests, sets=SETS), whole)
    rows = _rows(whole)
    assert [r["epoch"] for r in rows] == [1, 2] and 0 < rows[0]["step"] < rows[1]["step"]

    killed = tmp_path / "killed"
    save = io.torch_save

    def killed_at_epoch_2(path, obj):  # the log of epoch 2 is written, its checkpoint is not
        if path.name == "checkpoint.pt" and obj["epoch"] == 2:
            raise KeyboardInterrupt
        return save(path, obj)

    monkeypatch.setattr(io, "torch_save", killed_at_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        finetune(build_config(demo_manifests, sets=SETS), killed)
    assert [r["epoch"] for r in _rows(killed)] == [1, 2]
    monkeypatch.setattr(io, "torch_save", save)
    resumed = finetune(build_config(demo_manifests, sets=SETS), killed)
    assert resumed.resumed_from == 1
    assert _no_clock(_rows(killed)) == _no_clock(rows)  # one row per epoch, as if never killed
    assert (killed / WEIGHTS_NAME).read_bytes() == (whole / WEIGHTS_NAME).read_bytes()
