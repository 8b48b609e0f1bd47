"""Soft-voting bagging (``fuse --bag K``): members differ, the bag's predictions are the mean of
its members', a killed bag resumes member by member to the same result, and the ``bag`` combiner."""

import json

import numpy as np
import pytest

from cli.main import main
from fusion.synthetic import make_dataset
from pipeline.fusion.config import build_config
from pipeline.scoring import combiners
from pipeline.scoring.ensemble import EnsembleConfig
from pipeline.runs.predictions import Predictions, face_mask_path, prediction_path
from stages.fuse import fuse

SETS = ["train.epochs=2", "train.patience=5", "train.batch_size=32", "bag.k=3"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("bag"), splits={"train": 5, "val": 2, "test": 1},
                        frames=40)


def _load(path):
    return {clip: array for clip, array in Predictions(path).items()}


def _interrupt_in_member(member, epoch):
    seen = {"members": 0}

    def progress(event):
        if event.task == "bag members" and event.advance:
            seen["members"] += 1
        if event.task == "epochs" and event.info.get("epoch") == epoch and seen["members"] == member:
            raise KeyboardInterrupt

    return progress


def test_bag_averages_members_and_resumes_member_by_member(data, tmp_path):
    config = build_config("image", data.store, data.manifests, sets=SETS)
    whole = fuse(config, tmp_path / "whole", name="bag")
    run = tmp_path / "whole" / "bag"
    members = [run / "members" / str(i) for i in range(3)]
    metrics = [json.loads((m / "metrics.json").read_text()) for m in members]
    assert len({m["seed"] for m in metrics}) == 3  # its own seed each
    assert len({tuple(m["bootstrap"]) for m in metrics}) == 3  # its own resample each
    assert all(m["dev_clips"] == metrics[0]["dev_clips"] for m in metrics)  # one dev slice
    assert set(metrics[0]["bootstrap"]).isdisjoint(metrics[0]["dev_clips"])
    for split in ("val", "test"):
        bag = _load(prediction_path(run, split, "main"))
        parts = [_load(prediction_path(m, split, "main")) for m in members]
        assert sorted(bag) == sorted(c.clip_id for c in data.clips if c.split == split)
        for clip in bag:
            np.testing.assert_allclose(bag[clip], np.mean([p[clip] for p in parts], axis=0),
                                       atol=1e-6)
            assert not np.array_equal(parts[0][clip], parts[1][clip])  # the members differ
        masks = _load(face_mask_path(run, split))
        assert all(np.array_equal(masks[c], _load(face_mask_path(members[0], split))[c]) for c in masks)
    assert whole.metrics.bag["k"] == 3 and whole.metrics.selected_on == "train-dev"

    # killed during member 1's second epoch: member 0 is kept, member 1 continues, same result
    with pytest.raises(KeyboardInterrupt):
        fuse(config, tmp_path / "killed", name="bag", progress=_interrupt_in_member(1, 2))
    killed = tmp_path / "killed" / "bag"
    assert (killed / "members" / "0" / "metrics.json").exists()
    assert not (killed / "metrics.json").exists()
    first = (killed / "members" / "0" / "checkpoint.pt").stat().st_mtime_ns
    resumed = fuse(config, tmp_path / "killed", name="bag")
    assert (killed / "members" / "0" / "checkpoint.pt").stat().st_mtime_ns == first
    assert not resumed.already_complete
    a, b = _load(prediction_path(run, "val", "main")), _load(prediction_path(killed, "val", "main"))
    assert all(np.array_equal(a[c], b[c]) for c in a)
    assert fuse(config, tmp_path / "killed", name="bag").already_complete


def test_bag_command_prints_members(data, tmp_path, capsys):
    assert main(["fuse", "--method", "audio", "--store", str(data.store), "--manifests",
                 str(data.manifests), "--out", str(tmp_path), "--bag", "2",
                 "--set", "train.epochs=1"]) == 0
    out = capsys.readouterr().out
    assert "member 0: val macro-F1" in out and "bag of 2" in out and "selected on: train-dev" in out
    assert main(["fuse", "--method", "audio", "--store", str(data.store), "--manifests",
                 str(data.manifests), "--out", str(tmp_path), "--bag", "2",
                 "--set", "train.epochs=1", "--set", "train.lr=0.1"]) == 1
    assert "train.lr differ" in " ".join(capsys.readouterr().err.split())


def test_bag_combiner_soft_votes_variants_of_one_head():
    names = ["image_s0/main", "image_s1/main", "mfm/fusion", "mfm/image", "audio/main"]
    found = combiners.combiner("bag").candidates(names, EnsembleConfig())
    assert [(c.name, c.members) for c in found] == [("bag image main", (0, 1))]
    # different heads sharing an output name are no bag; nor is every member (that is `mean`)
    assert combiners.combiner("bag").candidates(["image/main", "audio/main", "seq/main"],
                                                EnsembleConfig()) == []
    assert combiners.combiner("bag").candidates(["0/main", "1/main"], EnsembleConfig()) == []
    assert [c.name for c in combiners.combiner("bag").candidates(
        ["0/main", "1/main", "mfm/fusion"], EnsembleConfig())] == ["bag main"]
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(8), size=(4, 30)).astype(np.float32)

    class Data:  # what fit reads
        pass

    data = Data()
    data.probs = probs
    fitted = combiners.combiner("bag").fit(found[0], data, None, EnsembleConfig())
    np.testing.assert_allclose(combiners.apply(fitted, probs), probs[:2].mean(axis=0), atol=1e-6)
