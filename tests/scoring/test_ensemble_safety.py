"""Stage three refuses runs of other manifests, and an interruption never leaves a scores.json
beside a report of another run (issue 14, items 6 and 7)."""

import dataclasses
import json

import numpy as np
import pytest

from cli.main import main
from pipeline import io
from pipeline.data.manifest import fingerprint, load_clips
from pipeline.errors import PipelineError
from pipeline.scoring.ensemble import EnsembleConfig
from scoring.test_ensemble_stage import _clips, _run
from stages import ensemble as stage
from stages.ensemble import run_ensemble

QUICK = EnsembleConfig(windows=(1, 5), folds=2)


@pytest.fixture()
def project(tmp_path):
    rng = np.random.default_rng(0)
    clips = _clips(tmp_path, rng)
    runs = [_run(tmp_path, "a", ["main"], clips, rng), _run(tmp_path, "b", ["main"], clips, rng)]
    right = fingerprint(load_clips(tmp_path / "manifests"))
    for run in runs:
        _set_fingerprint(run, right)
    return tmp_path, clips, runs


def _set_fingerprint(run, value):
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["manifest_fingerprint"] = value
    (run / "metrics.json").write_text(json.dumps(metrics))


def _relabelled_fingerprint(clips):
    every = [c for split in clips.values() for c in split]
    first = every[0]
    every[0] = dataclasses.replace(first, labels=(first.labels + 1) % 8)
    return fingerprint(every)


def test_runs_of_different_manifests_are_refused_unless_allowed(project, capsys):
    root, clips, (a, b) = project
    _set_fingerprint(b, _relabelled_fingerprint(clips))
    args = ["ensemble", str(a), str(b), "--manifests", str(root / "manifests"),
            "--out", str(root / "out"), "--windows", "1,5", "--folds", "2"]
    assert main(args) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"{a} and {b} were trained on different manifests" in err
    assert "--allow-manifest-mismatch" in err and not (root / "out" / "scores.json").exists()
    assert main([*args, "--allow-manifest-mismatch"]) == 0
    scores = json.loads((root / "out" / "scores.json").read_text())
    assert scores["manifest_mismatch_allowed"] is True
    assert "--allow-manifest-mismatch" in (root / "out" / "report.html").read_text()


def test_runs_of_other_manifests_than_the_given_ones_are_refused(project):
    root, clips, runs = project
    for run in runs:
        _set_fingerprint(run, _relabelled_fingerprint(clips))
    with pytest.raises(PipelineError, match=f"{runs[0]} was trained on other manifests than"):
        run_ensemble(runs, root / "manifests", root / "out", QUICK)
    result = run_ensemble(runs, root / "manifests", root / "out", QUICK,
                          allow_manifest_mismatch=True)
    assert result.scores_path.is_file()


def test_scores_record_the_fingerprint(project):
    root, _, runs = project
    run_ensemble(runs, root / "manifests", root / "out", QUICK)
    scores = json.loads((root / "out" / "scores.json").read_text())
    assert scores["manifest_fingerprint"] == fingerprint(load_clips(root / "manifests"))
    assert scores["manifest_mismatch_allowed"] is False


def _contents(out):
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_interrupted_ensemble_leaves_the_previous_outputs_intact(project, monkeypatch):
    root, _, runs = project
    out = root / "out"
    run_ensemble(runs, root / "manifests", out, QUICK)
    before = _contents(out)
    assert {"scores.json", "report.html", "submission.txt", "config.toml"} <= set(before)

    def interrupted(*args, **kwargs):  # Ctrl-C while the report is written
        raise KeyboardInterrupt

    monkeypatch.setattr(stage, "write_report", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_ensemble(runs, root / "manifests", out, EnsembleConfig(windows=(1, 3), folds=3))
    assert _contents(out) == before  # nothing changed, no staging folder left


def test_a_stale_submission_goes_with_the_new_scores(project):
    root, _, runs = project
    out = root / "out"
    run_ensemble(runs, root / "manifests", out, QUICK)
    (runs[1] / "predictions" / "test" / "main.npz").unlink()
    result = run_ensemble(runs, root / "manifests", out, QUICK)
    assert result.submission_path is None and "removed the earlier" in result.submission_note
    assert not (out / "submission.txt").exists()


def test_commit_finishes_its_moves_before_an_interruption(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "scores.json").write_text("old")
    (out / "report.html").write_text("old")
    real, calls = io.os.replace, []

    def replace(source, target):
        calls.append(target)
        real(source, target)
        if len(calls) == 1:
            raise KeyboardInterrupt  # arrives right after the first move

    monkeypatch.setattr(io.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        with io.staged_files(out, last="scores.json") as staging:
            for name in ("report.html", "a.png", "scores.json"):
                (staging / name).write_text("new")
    assert [p.name for p in calls] == ["a.png", "report.html", "scores.json"]
    assert {p.name: p.read_text() for p in out.iterdir()} == {
        "scores.json": "new", "report.html": "new", "a.png": "new"}


def test_a_multitask_run_is_accepted_on_its_own_manifests_and_refused_on_others(tmp_path):
    """An expression + AU run reads the AU-only clips as well; its fingerprint covers them, so
    ensemble checks it against the clips its tasks read (it refused the run's own manifests
    without --allow-manifest-mismatch before), beside a single-task run, and still refuses the
    run on manifests whose AU-only labels differ."""
    import shutil

    from fusion.synthetic import make_dataset, with_au_labels
    from pipeline.data.manifest import write_manifest
    from pipeline.fusion.config import build_config
    from stages.fuse import fuse

    data = with_au_labels(make_dataset(tmp_path / "data", splits={"train": 4, "val": 2, "test": 1},
                                       frames=40, faceless=0.15))
    fast = ["train.epochs=1", "train.batch_size=32"]
    same = dataclasses.replace(QUICK, tune_on="same", nested=False)  # one expression val clip
    multi = fuse(build_config("image", data.store, data.manifests,
                              sets=[*fast, 'head.tasks=["expr","au"]']), tmp_path / "runs", "au")
    single = fuse(build_config("image", data.store, data.manifests, sets=fast),
                  tmp_path / "runs", "expr")
    result = run_ensemble([multi.run_dir, single.run_dir], data.manifests, tmp_path / "out", same)
    assert json.loads(result.scores_path.read_text())["manifest_mismatch_allowed"] is False
    other = tmp_path / "other"
    shutil.copytree(data.manifests, other)
    au_only = load_clips(other, (), au_only=True)
    au_only[0] = dataclasses.replace(au_only[0], au_labels=1 - au_only[0].au_labels.clip(0, 1))
    write_manifest(other / "au_only.jsonl", au_only)
    with pytest.raises(PipelineError, match=f"{multi.run_dir} was trained on other manifests"):
        run_ensemble([multi.run_dir, single.run_dir], other, tmp_path / "out2", same)
    run_ensemble([single.run_dir], other, tmp_path / "out3", same)  # it read no AU-only clip
