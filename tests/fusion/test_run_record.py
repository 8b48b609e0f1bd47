"""The run package is the one hand-off between the stages: every registered head's run (and a bag)
is read back through :mod:`pipeline.runs` with every field of its record checked against what
training returned and what the run directory holds, and a ``metrics.json`` written before the
run package existed still reads."""

import json
import shutil
from pathlib import Path

import pytest

from pipeline.data.labels import NUM_AUS
from pipeline.data.manifest import fingerprint, load_clips
from pipeline.errors import PipelineError
from pipeline.fusion.config import build_config
from pipeline.fusion.heads import registry
from pipeline.runs.layout import RUN_FILES, RunPaths
from pipeline.runs.predictions import Predictions
from pipeline.runs.record import DEFAULT_SELECTED_ON, RunRecord, read_record, read_run
from stages.fuse import fuse

from .synthetic import make_dataset, with_au_labels

FAST = ["train.epochs=2", "train.patience=10", "train.batch_size=32"]
SMALL = {
    "mfm": ["head.dim=16", "head.heads=2", "head.context=2"],
    "sequence": ["head.dim=16", "head.heads=2", "head.ff=32", "head.length=10",
                 "head.eval_stride=5", "head.train_stride=5"],
    "gcsa": ["head.width=8", "head.audio_width=4", "head.window=8", "head.time_mask=4",
             "head.freq_mask=4"],
    "dan": ["head.width=16", "head.reduction=4", "head.heads=2"],
}
OLD = Path(__file__).parent / "data" / "metrics_sequence_v0.json"  # written by the code before


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("record"), splits={"train": 3, "val": 1, "test": 1},
                        frames=40, token_maps=True, logmel=True, faceless=0.15)


def _check_record(record: RunRecord, result, run_dir: Path, data, head_class) -> None:
    """Every field of a record against the training result, the head and the run's files."""
    assert record.method == result.method == head_class.name
    assert record.outputs == head_class.outputs == result.outputs
    assert record.primary == head_class.primary == result.primary
    assert record.val_macro_f1 == result.val_macro_f1 and set(record.val_macro_f1) == set(
        record.outputs)
    assert record.selected_on == "train-dev"  # the default select_on: the dev slice
    assert record.face_outputs == head_class.face_outputs
    assert record.au_outputs == () and record.val_au is None  # expression-only heads
    expected = {split: sorted(c.clip_id for c in data.clips if c.split == split)
                for split in ("val", "test")}
    assert {split: sorted(ids) for split, ids in record.splits.items()} == expected
    assert record.features and all(isinstance(k, str) for k in record.features.values())
    paths = RunPaths(run_dir)
    lengths = {c.clip_id: c.n_frames for c in data.clips}
    for split, ids in expected.items():
        masks = Predictions(paths.face_mask(split))
        assert sorted(masks) == ids
        for output in record.outputs:
            probs = Predictions(paths.prediction(split, output))
            assert sorted(probs) == ids
            assert all(probs[i].shape == (lengths[i], 8) for i in ids)
    # the file holds exactly the record, and the record round-trips through the schema
    assert json.loads(paths.metrics.read_text()) == record.to_json()
    assert RunRecord.from_json(record.to_json()) == record
    assert result.metrics == record  # what training returned is the record it wrote


@pytest.mark.parametrize("method", sorted(registry()))
def test_every_heads_run_reads_back_through_the_run_package(method, data, tmp_path):
    config = build_config(method, data.store, data.manifests, sets=[*FAST, *SMALL.get(method, [])])
    result = fuse(config, tmp_path, name=method)
    run = read_run(result.run_dir)
    record = run.record
    assert run.name == method and record.bag is None
    _check_record(record, result, result.run_dir, data, registry()[method])
    assert record.epochs_run == result.epochs_run == len(record.history) == 2
    assert 1 <= record.best_epoch == result.best_epoch <= 2
    assert set(record.dev_macro_f1) == set(record.outputs)  # the default: selected on dev
    assert record.manifest_fingerprint == fingerprint(load_clips(data.manifests))
    # the files the layout lists are the files the run wrote (attention only for dan)
    written = {p.name for p in result.run_dir.iterdir() if p.is_file()}
    assert written == {*RUN_FILES, "owner.lock"} - ({"attention.npz"} if method != "dan" else set())
    assert (run.attention is not None) == (method == "dan")
    if method in ("proportional", "gcsa"):  # heads fitting paper 004's m,n: their own table
        assert record.grid is not None and record.grid["best"] and "fitted_on" in record.grid
    else:
        assert record.grid is None


def test_a_bags_record_reads_back(data, tmp_path):
    config = build_config("image", data.store, data.manifests, sets=[*FAST, "bag.k=2"])
    result = fuse(config, tmp_path, name="bag")
    record = read_run(result.run_dir).record
    _check_record(record, result, result.run_dir, data, registry()["image"])
    assert record.dev_macro_f1 is None  # a bag selects nothing: its members did
    assert record.manifest_fingerprint is None  # (members' differ: bootstrap resamples)
    assert record.bag["k"] == 2 and [m["dir"] for m in record.bag["members"]] == ["members/0",
                                                                                   "members/1"]
    for member in record.bag["members"]:
        assert read_record(result.run_dir / member["dir"]).val_macro_f1 == member["val_macro_f1"]


def test_a_multitask_runs_record_reads_back(tmp_path):
    """Every field of an expression + AU run's record, the AU ones included, against the
    manifests, the training result and the predictions written."""
    data = with_au_labels(make_dataset(tmp_path / "data", splits={"train": 4, "val": 2, "test": 1},
                                       frames=40, faceless=0.15))
    config = build_config("image", data.store, data.manifests,
                          sets=[*FAST, 'head.tasks=["expr","au"]', "train.task_schedule=joint"])
    result = fuse(config, tmp_path / "runs", name="au")
    run = read_run(result.run_dir)
    record = run.record
    assert run.name == "au" and record.bag is None and run.attention is None
    assert result.metrics == record  # what training returned is the record it wrote
    assert record.method == result.method == "image" and record.primary == result.primary == "main"
    assert record.outputs == result.outputs == ("main",) and record.au_outputs == ("au",)
    assert record.face_outputs == registry()["image"].face_outputs
    assert record.selected_on == "train-dev" and set(record.dev_macro_f1) == {"main"}
    assert record.val_macro_f1 == result.val_macro_f1 and set(record.val_macro_f1) == {"main"}
    assert record.val_au == result.val_au and 0 <= record.val_au["mean_f1"] <= 1
    assert record.epochs_run == result.epochs_run == len(record.history) == 2
    assert 1 <= record.best_epoch == result.best_epoch <= 2
    assert all("dev_macro_f1" in h and "val_au" in h for h in record.history)  # AUs scored on dev
    # the clips of a split for either task (train00: expression train, AU val; val00: AU only)
    clips = {c.clip_id: c for c in data.clips}
    in_split = {split: sorted(k for k, c in clips.items()
                              if split in (c.task_split("expr"), c.task_split("au")))
                for split in ("train", "val", "test")}
    assert in_split["val"] == ["train00", "val00", "val01"] and in_split["test"] == ["test00"]
    assert {split: sorted(ids) for split, ids in record.splits.items()} == {
        "val": in_split["val"], "test": in_split["test"]}
    assert record.manifest_fingerprint == fingerprint(
        clips[k] for split in ("train", "val", "test") for k in in_split[split])
    assert record.features and all(isinstance(k, str) for k in record.features.values())
    assert record.extra["tasks"] == ["expr", "au"]
    assert record.extra["task_schedule"] == "joint" and record.extra["select_task"] == "expr"
    weights = record.extra["au_pos_weight"]
    assert len(weights) == NUM_AUS and all(w > 0 for w in weights)
    # predictions: expressions of the expression split's clips, AUs of the AU split's
    paths = RunPaths(result.run_dir)
    for split in ("val", "test"):
        expr = sorted(k for k in in_split[split] if clips[k].task_split("expr") == split)
        au = sorted(k for k in in_split[split] if clips[k].task_split("au") == split
                    or split == "test")  # every test clip gets AU predictions
        assert sorted(Predictions(paths.face_mask(split))) == in_split[split]
        main = Predictions(paths.prediction(split, "main"))
        aus = Predictions(paths.prediction(split, "au"))
        assert sorted(main) == expr and all(main[k].shape == (clips[k].n_frames, 8) for k in expr)
        assert sorted(aus) == au and all(aus[k].shape == (clips[k].n_frames, NUM_AUS) for k in au)
    assert json.loads(paths.metrics.read_text()) == record.to_json()
    assert RunRecord.from_json(record.to_json()) == record


def test_a_record_written_before_the_run_package_still_reads(tmp_path):
    old = json.loads(OLD.read_text())
    shutil.copy(OLD, tmp_path / "metrics.json")
    record = read_record(tmp_path)
    assert record.outputs == ("main",) and record.method == "sequence"
    assert record.selected_on == old["selected_on"] == "train-dev"
    assert record.val_macro_f1 == old["val_macro_f1"] and record.history == old["history"]
    assert record.splits == old["splits"] and record.features == old["features"]
    assert record.dev_macro_f1 == old["dev_macro_f1"]
    assert record.extra["val_loss"] == old["val_loss"] and record.extra["tasks"] == ["expr"]
    assert record.to_json() == old  # nothing lost, nothing added
    # the loop's fields are the record's own, not the head's extra
    assert (record.stopped, record.seed, record.resumed_from) == ("early", 0, 0)
    assert record.val_scores == old["val_scores"] and set(record.val_scores) == {"main"}
    assert not {"stopped", "seed", "resumed_from", "val_scores"} & set(record.extra)
    # an older record still: no selected_on (heads that early-stopped on val wrote none)
    del old["selected_on"]
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    assert read_record(tmp_path).selected_on == DEFAULT_SELECTED_ON == "val"
    # older still: none of the loop's fields (absent, not invented)
    for key in ("stopped", "seed", "resumed_from", "val_scores"):
        del old[key]
    (tmp_path / "metrics.json").write_text(json.dumps(old))
    record = read_record(tmp_path)
    assert (record.stopped, record.seed, record.resumed_from, record.val_scores) == (None,) * 4
    assert record.to_json() == {**old, "selected_on": DEFAULT_SELECTED_ON}  # nothing invented


def test_the_loops_fields_are_typed(tmp_path):
    old = json.loads(OLD.read_text())
    for key, bad in (("stopped", 3), ("seed", "0"), ("resumed_from", 1.5), ("val_scores", [])):
        with pytest.raises(PipelineError, match=f"metrics.json: '{key}' should be"):
            RunRecord.from_json({**old, key: bad}, tmp_path / "metrics.json")


def test_a_record_of_the_wrong_shape_is_one_line_naming_the_file_and_field(tmp_path):
    old = json.loads(OLD.read_text())
    (tmp_path / "metrics.json").write_text(json.dumps({**old, "best_epoch": "7"}))
    with pytest.raises(PipelineError, match=r"metrics.json: 'best_epoch' should be an integer"):
        read_record(tmp_path)
    (tmp_path / "metrics.json").write_text(json.dumps({**old, "outputs": []}))
    with pytest.raises(PipelineError, match="'outputs' should be a non-empty list"):
        read_record(tmp_path)
    (tmp_path / "metrics.json").write_text("{")
    with pytest.raises(PipelineError, match="cannot read"):
        read_record(tmp_path)
