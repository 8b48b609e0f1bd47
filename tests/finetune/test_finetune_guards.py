"""``finetune`` refuses what it cannot train on before writing (missing initial weights, labels of
one class unless ``allow_single_class``), and an interruption between the weights and the record
leaves no folder; the rerun publishes it whole (issue 37's trials)."""

import logging

import numpy as np
import pytest

from cli.main import main
from pipeline import io
from pipeline.data.manifest import Clip, iter_manifest, write_manifest
from pipeline.errors import PipelineError
from pipeline.features import weights_record
from pipeline.features.weights_record import RECORD_NAME, WEIGHTS_NAME, read_record
from pipeline.finetune.config import build_config
from pipeline.finetune.loop import work_dir
from stages.finetune import finetune

SETS = ["epochs=1", "batch_size=16", "model=test_resnet"]


def test_missing_initial_weights_are_one_line_naming_the_path(demo_manifests, tmp_path, capsys):
    missing = tmp_path / "no-such-weights.safetensors"
    out = tmp_path / "w"
    args = ["finetune", "--manifests", str(demo_manifests), "--out", str(out),
            "--weights", str(missing)]
    for s in SETS:
        args += ["--set", s]
    assert main(args) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(missing) in errors[0] and "no such initial weights" in errors[0]
    assert "Errno" not in err and not work_dir(out).exists() and not out.exists()


def _one_class(manifests, tmp_path):
    out = tmp_path / "one_class"
    out.mkdir()
    for path in manifests.glob("*.jsonl"):
        clips = list(iter_manifest(path))
        if path.name == "train.jsonl":
            clips = [Clip(**{**{k: getattr(c, k) for k in c.__dataclass_fields__},
                             "labels": None if c.labels is None else
                             np.where(c.labels >= 0, 2, c.labels).astype(np.int8)})
                     for c in clips]
        write_manifest(out / path.name, clips)
    return out


def test_single_class_labels_are_refused_unless_allowed(demo_manifests, tmp_path, caplog):
    manifests = _one_class(demo_manifests, tmp_path)
    with pytest.raises(PipelineError, match=r"1 class\(es\) \(Disgust\).*--set "
                                            r"allow_single_class=true") as e:
        finetune(build_config(manifests, sets=SETS), tmp_path / "w")
    assert "\n" not in str(e.value) and not (tmp_path / "w").exists()
    with caplog.at_level(logging.WARNING):
        result = finetune(build_config(manifests, sets=[*SETS, "allow_single_class=true"]),
                          tmp_path / "w")
    assert result.record.config["allow_single_class"] is True
    assert any("training anyway" in r.getMessage() for r in caplog.records)


def test_interrupted_before_the_record_then_rerun_publishes_the_whole_folder(
        demo_manifests, tmp_path, monkeypatch):
    out = tmp_path / "w"
    real = io.write_json

    def interrupted(path, *args, **kwargs):
        if str(path).endswith(RECORD_NAME):
            raise KeyboardInterrupt  # Ctrl-C (or SIGTERM) right before the record
        return real(path, *args, **kwargs)

    monkeypatch.setattr(weights_record.io, "write_json", interrupted)
    with pytest.raises(KeyboardInterrupt):
        finetune(build_config(demo_manifests, sets=SETS), out)
    assert not out.exists() or not (out / WEIGHTS_NAME).exists()
    monkeypatch.setattr(weights_record.io, "write_json", real)
    result = finetune(build_config(demo_manifests, sets=SETS), out)
    assert result.resumed_from == 1 and not result.already_complete
    assert read_record(out).epochs_run == 1
    assert sorted(p.name for p in out.iterdir()) == [RECORD_NAME, WEIGHTS_NAME]
