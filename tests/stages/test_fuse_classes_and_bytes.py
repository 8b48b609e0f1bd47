"""``fuse`` refuses training labels of one class (unless ``train.allow_single_class``), warns when
the dev slice lacks a training class, and writes the same ``.npz`` bytes on every run (zip members
carry a fixed time, not the time of writing)."""

import logging
import time

import numpy as np
import pytest

from cli.main import main
from fusion.synthetic import make_dataset
from pipeline.data.manifest import Clip, iter_manifest, write_manifest

QUICK = ["--set", "train.epochs=1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("fuse_classes"),
                        splits={"train": 3, "val": 1, "test": 1}, frames=40)


def _fuse(data, manifests, out, *args):
    return main(["fuse", "--store", str(data.store), "--manifests", str(manifests),
                 "--out", str(out), "--method", "image", *QUICK, *args])


def _relabelled(data, tmp_path, label_of):
    """A copy of the manifests whose training clip i has labels ``label_of(i, labels)``."""
    out = tmp_path / "manifests"
    out.mkdir()
    for path in data.manifests.glob("*.jsonl"):
        clips = list(iter_manifest(path))
        if path.name == "train.jsonl":
            clips = [Clip(**{**{k: getattr(c, k) for k in c.__dataclass_fields__},
                             "labels": label_of(i, c.labels)}) for i, c in enumerate(clips)]
        write_manifest(out / path.name, clips)
    return out


def _one_class(i, labels):
    return np.where(labels >= 0, 3, labels).astype(np.int8)


def test_single_class_training_labels_are_refused_in_one_line(data, tmp_path, capsys):
    manifests = _relabelled(data, tmp_path, _one_class)
    assert _fuse(data, manifests, tmp_path / "runs") == 1
    err = capsys.readouterr().err.strip()
    # one error line (the CLI adds its "(run with --debug ...)" hint after it)
    assert [line.startswith("error:") for line in err.splitlines()] == [True, False]
    assert "Traceback" not in err
    assert "1 class(es)" in err and "train.allow_single_class=true" in err
    assert str(manifests) in err


def test_allow_single_class_trains_with_a_warning(data, tmp_path, caplog):
    manifests = _relabelled(data, tmp_path, _one_class)
    with caplog.at_level(logging.WARNING):
        assert _fuse(data, manifests, tmp_path / "runs", "--set",
                     "train.allow_single_class=true") == 0
    warnings = [r.getMessage() for r in caplog.records if "class(es)" in r.getMessage()]
    assert len(warnings) == 1 and "training anyway" in warnings[0] and "\n" not in warnings[0]


def test_a_dev_slice_without_a_training_class_is_warned(data, tmp_path, caplog):
    # Class 7 (Other) only in the first training clip, which trains (dev_seed 0's slice is
    # train01): the dev slice holds no frame of it.
    def rare(i, labels):
        labels = np.where(labels == 7, 0, labels).astype(np.int8)
        if i == 0:
            labels[:5] = 7
        return labels

    manifests = _relabelled(data, tmp_path, rare)
    with caplog.at_level(logging.WARNING):
        assert _fuse(data, manifests, tmp_path / "runs") == 0
    blind = [r.getMessage() for r in caplog.records if "blind" in r.getMessage()]
    assert len(blind) == 1 and "dev slice holds no frame of" in blind[0] and "Other" in blind[0]
    assert "\n" not in blind[0]


def test_two_runs_of_the_same_fuse_write_byte_identical_npz(data, tmp_path, monkeypatch):
    assert _fuse(data, data.manifests, tmp_path / "a") == 0
    # The second run an hour later (zip stores local time at 2 s resolution).
    later = time.time() + 3600.0
    real_localtime = time.localtime
    monkeypatch.setattr(time, "localtime", lambda t=None: real_localtime(later if t is None else t + 3600))
    assert _fuse(data, data.manifests, tmp_path / "b") == 0
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.npz"))
    assert files
    for name in files:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
