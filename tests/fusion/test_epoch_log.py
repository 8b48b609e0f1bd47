"""``fuse``'s per-epoch log: one row per epoch in epochs.jsonl and epochs.csv (epoch, step, lr,
losses, dev scores, frames/s, seconds), exactly one per epoch after a kill between the log and the
checkpoint, progress inside an epoch, and ``--set log.tensorboard=true``."""

import csv
import json
import sys

import pytest

from cli.main import main
from pipeline.epoch_log import CSV, JSONL, EpochLog, LogConfig, flatten, split_sets
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.rundir import RunDir
from pipeline.fusion.train import train

from .synthetic import make_dataset

FAST = ["train.epochs=3", "train.patience=10", "train.batch_size=32"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("epoch_log"), splits={"train": 3, "val": 1},
                        frames=40)


def _run(data, run_dir, *sets, **kwargs):
    config = build_config("image", data.store, data.manifests, sets=[*FAST, *sets])
    return train(config, run_dir, data.clips, FeatureStore(data.store), **kwargs)


def _rows(run_dir):
    jsonl = [json.loads(line) for line in (run_dir / JSONL).read_text().splitlines()]
    with open(run_dir / CSV, newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in table] == [r["epoch"] for r in jsonl]
    return jsonl, table


def _no_clock(rows):
    return [{k: v for k, v in r.items() if "seconds" not in k and k != "frames_per_s"} for r in rows]


def test_a_row_per_epoch_with_step_lr_loss_scores_rate_and_seconds(data, tmp_path):
    events = []
    result = _run(data, tmp_path / "run", "train.lr=0.002", progress=events.append)
    jsonl, table = _rows(tmp_path / "run")
    assert [r["epoch"] for r in jsonl] == [1, 2, 3]
    history = result.metrics.history
    for row, entry in zip(jsonl, history):
        assert row["lr"] == 0.002 and row["train_loss"] == entry["train_loss"]
        assert row["dev_macro_f1.main"] == entry["dev_macro_f1"]["main"]
        assert row["seconds"] == entry["seconds"] and row["frames_per_s"] > 0
    steps = [r["step"] for r in jsonl]
    assert 0 < steps[0] < steps[1] < steps[2]  # cumulative optimiser steps
    assert list(table[0])[:3] == ["epoch", "step", "lr"] and "dev_macro_f1.main" in table[0]
    # progress inside each epoch: the training clips, with frames/s
    inside = [e for e in events if e.task == "train clips"]
    starts = [e for e in inside if e.total is not None]
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    trained = 3 - len(record["dev_clips"])  # the training clips less the dev slice
    assert len(starts) == 3 and all(e.total == trained > 0 for e in starts)
    assert sum(e.advance for e in inside) == 3 * trained
    assert all(e.info["frames/s"] > 0 for e in inside if e.advance)


def test_kill_between_log_and_checkpoint_leaves_one_row_per_epoch(data, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    _run(data, whole, "train.epochs=4")
    cut = tmp_path / "cut"
    save = RunDir.save_checkpoint

    def killed_at_epoch_3(self, state):  # the log of epoch 3 is written, its checkpoint is not
        if state["epoch"] == 3:
            raise KeyboardInterrupt
        save(self, state)

    monkeypatch.setattr(RunDir, "save_checkpoint", killed_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        _run(data, cut, "train.epochs=4")
    assert [r["epoch"] for r in _rows(cut)[0]] == [1, 2, 3]  # epoch 3 logged, not checkpointed
    monkeypatch.setattr(RunDir, "save_checkpoint", save)
    resumed = _run(data, cut, "train.epochs=4")
    assert resumed.resumed_from == 2
    rows, table = _rows(cut)
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert _no_clock(rows) == _no_clock(_rows(whole)[0])  # as if never interrupted
    assert len(table) == 4


def test_restore_drops_rows_after_the_checkpoint_and_flatten_names_columns(tmp_path):
    log = EpochLog(tmp_path, lambda e: None)
    log.restore([{"epoch": 1, "step": 5, "lr": 0.1}, {"epoch": 2, "step": 9, "lr": 0.1}])
    assert log.steps == 9 and len(_rows(tmp_path)[0]) == 2
    log.restore([{"epoch": 1, "step": 5, "lr": 0.1}])
    assert log.steps == 5 and [r["epoch"] for r in _rows(tmp_path)[0]] == [1]
    assert flatten({"a": {"b": 1, "c": [2, 3]}, "d": 4}) == {"a.b": 1, "a.c.0": 2, "a.c.1": 3, "d": 4}


def test_log_options_are_split_from_the_run_config():
    log, rest = split_sets(["train.lr=0.1", "log.tensorboard=false"])
    assert log == LogConfig() and rest == ["train.lr=0.1"]
    with pytest.raises(PipelineError, match="log: unknown option.*tensorbord.*did you mean tensorboard"):
        split_sets(["log.tensorbord=true"])


def test_tensorboard_absent_is_one_line_naming_the_install(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as where it is not installed
    code = main(["fuse", "--method", "image", "--store", str(data.store), "--manifests",
                 str(data.manifests), "--out", str(tmp_path / "runs"),
                 "--set", "log.tensorboard=true"])
    err = capsys.readouterr().err
    assert code == 1 and "pip install tensorboard" in err and "log.tensorboard" in err
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_tensorboard_present_writes_the_scalars(data, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed here")
    from pipeline.epoch_log import use

    with use(LogConfig(tensorboard=True)):
        _run(data, tmp_path / "run", "train.epochs=2")
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))


def test_cli_prints_lr_and_frames_per_second_and_logs_progress_inside_epochs(data, tmp_path,
                                                                            monkeypatch, capsys):
    monkeypatch.setenv("FER_PROGRESS_SECONDS", "0")  # a batch log's line for every event
    code = main(["fuse", "--method", "image", "--store", str(data.store), "--manifests",
                 str(data.manifests), "--out", str(tmp_path / "runs"), "--set", "train.epochs=2",
                 "--set", "train.lr=0.002"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    epoch_lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and all("lr 0.002" in line and " frames/s" in line
                                         for line in epoch_lines), captured.out
    # stderr is no terminal here: the batch log's lines, with the clips of each epoch
    inside = [line for line in captured.err.splitlines() if "] train clips " in line]
    assert any("frames/s" in line and "ETA" in line for line in inside), captured.err
    assert len(_rows(tmp_path / "runs" / "image")[0]) == 2


def test_tensorboard_gets_every_numeric_column_per_epoch_and_purges_repeated_epochs(
        data, tmp_path, monkeypatch):
    """Without the package here: a stand-in SummaryWriter records what the log sends it."""
    import types

    from pipeline.epoch_log import use

    writers = []

    class Writer:
        def __init__(self, logdir, purge_step=None):
            self.logdir, self.purge_step, self.scalars = logdir, purge_step, []
            writers.append(self)

        def add_scalar(self, tag, value, global_step):
            self.scalars.append((tag, value, global_step))

        def flush(self):
            pass

    monkeypatch.setitem(sys.modules, "tensorboard", types.ModuleType("tensorboard"))
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard",
                        types.SimpleNamespace(SummaryWriter=Writer))
    with use(LogConfig(tensorboard=True)):
        with pytest.raises(KeyboardInterrupt):  # interrupted after epoch 2's checkpoint
            _run(data, tmp_path / "run", progress=_interrupt_after(2))
        assert _run(data, tmp_path / "run").resumed_from == 2
    first, resumed = writers
    assert first.logdir == str(tmp_path / "run" / "tensorboard") and first.purge_step == 1
    assert resumed.purge_step == 3  # epochs from 3 on: an interrupted run's events are dropped
    rows = _rows(tmp_path / "run")[0]
    expected = [(k, v, r["epoch"]) for r in rows for k, v in r.items()
                if k != "epoch" and isinstance(v, (int, float))]
    assert first.scalars + resumed.scalars == expected  # rows 1-2 from the first call, 3 after


def _interrupt_after(epoch):
    def progress(event):
        if event.task == "epochs" and event.info.get("epoch") == epoch:
            raise KeyboardInterrupt

    return progress


def test_lr_is_the_one_of_the_epochs_last_step_not_the_next_epochs(tmp_path):
    import torch

    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=0.1)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    log = EpochLog(tmp_path, lambda e: None)
    log.attach(optimizer)
    for epoch in (1, 2):
        log.start_epoch(1)
        weight.grad = torch.ones(1)
        optimizer.step()
        scheduler.step()  # (per epoch, after the epoch's steps: the next epoch's lr)
        log.end_epoch({"epoch": epoch}, optimizer)
    assert [(r["lr"], r["step"]) for r in _rows(tmp_path)[0]] == [(0.1, 1), (0.05, 2)]
