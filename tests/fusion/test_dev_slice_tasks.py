"""A multi-task run's dev slice: the expression dev videos of an expression-only run on the same
manifests and seed, with the AU/VA-only clips of those videos held out beside them and those of
other videos training; a run selected by AUs or VA on a slice without (or with few of) that task's
frames is refused (or warned) in one line."""

import dataclasses
import logging

import numpy as np
import pytest

from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.run_setup import run_splits
from pipeline.fusion.training_run import TrainingRun
from pipeline.progress import silent
from pipeline.training import folds
from pipeline.training.class_check import check_task_frames

from .synthetic import au_of, make_dataset, va_of, with_va_labels


def _store(n_videos, seed=0):
    """Expression training clips v0..v{n-1} (with VA and AU labels), AU-only and VA-only clips
    (au_only.jsonl's kind) of some of those videos (``vK_right``), and AU/VA-only videos of their
    own (``a0``, ``a1``, ``w0``)."""
    rng = np.random.default_rng(seed)
    out = []

    def clip(clip_id, video, expr=True, au=True, va=True):
        n = int(rng.integers(20, 200))
        labels = rng.choice(8, size=n, p=[.3, .05, .02, .03, .25, .15, .1, .1]).astype(np.int8)
        return Clip(clip_id=clip_id, split="train", video_id=video, n_frames=n, fps=10.0,
                    frames_dir=None, video_path=None, audio_path=None,
                    labels=labels if expr else None,
                    au_labels=au_of(labels) if au else None, au_split="train" if au else None,
                    va_labels=va_of(labels) if va else None, va_split="train" if va else None)

    for v in range(n_videos):
        out.append(clip(f"v{v}", f"v{v}"))
        if v % 3 == 0:
            out.append(clip(f"v{v}_right", f"v{v}", expr=False, va=v % 2 == 0))
    out += [clip("a0", "a0", expr=False, va=False), clip("a1", "a1", expr=False, va=False),
            clip("w0", "w0", expr=False, au=False)]
    return out


def _config(tasks, *sets):
    return build_config("image", "/nonexistent/features.zarr", "/nonexistent/manifests",
                        sets=[f"head.tasks={tasks}", *sets])


@pytest.mark.parametrize("tasks", ['["expr","va"]', '["expr","au"]', '["expr","au","va"]'])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multi_task_dev_slice_holds_the_expression_only_runs_dev_videos(tasks, seed):
    clips = _store(12, seed)
    sets = [f"train.dev_seed={seed}"]
    expr = run_splits(clips, _config('["expr"]', *sets), ("expr",))
    multi = run_splits(clips, _config(tasks, *sets), tuple(_config(tasks).head.tasks))
    expr_dev = {c.video_id for c in expr["dev"]}
    # the same expression dev clips, so the same expression selection
    assert [c.clip_id for c in multi["dev"] if c.labels is not None] == \
        [c.clip_id for c in expr["dev"]]
    # AU/VA-only clips of the dev videos are held out; every other one trains
    assert {c.video_id for c in multi["dev"]} == expr_dev
    assert not expr_dev & {c.video_id for c in multi["train"]}
    everything = {c.clip_id for c in run_splits(clips, _config(tasks, "train.select_on=val"),
                                                tuple(_config(tasks).head.tasks))["train"]}
    assert {c.clip_id for c in multi["train"]} | {c.clip_id for c in multi["dev"]} == everything
    assert len(multi["train"]) + len(multi["dev"]) == len(everything)
    # the expression-only run's own slice is dev_slice's, clip for clip
    kept, dev = folds.dev_slice([c for c in clips if c.labels is not None], 0.2, seed)
    assert (expr["train"], expr["dev"]) == (kept, dev)


def test_some_seed_holds_out_au_only_clips_with_their_video():
    # the rule is visible: with some seed a dev video brings its AU-only clip into the dev slice
    held = [c.clip_id for seed in range(6)
            for c in run_splits(_store(12, seed), _config('["expr","au"]', f"train.dev_seed={seed}"),
                                ("expr", "au"))["dev"] if c.labels is None]
    assert held and all(name.endswith("_right") for name in held)


def test_check_task_frames_refuses_none_and_warns_of_few(caplog):
    clips = _store(12)
    train, dev = folds.dev_slice_of_videos(clips, [c for c in clips if c.labels is not None],
                                           0.2, 0)
    no_va = [dataclasses.replace(c, va_labels=None, va_split=None) for c in dev]
    with pytest.raises(PipelineError, match="holds no VA frame") as raised:
        check_task_frames(train, no_va, "va", "M", 0.2)
    assert "\n" not in str(raised.value) and "train.select_on=val" in str(raised.value)
    # one dev clip keeps 3 valid VA frames, the others none
    first = next(i for i, c in enumerate(dev) if c.va_labels is not None)
    kept = np.where(np.arange(dev[first].n_frames)[:, None] < 3, dev[first].va_labels, -5.0)
    few = [*no_va[:first], dataclasses.replace(dev[first], va_labels=kept.astype(np.float32)),
           *no_va[first + 1:]]
    with caplog.at_level(logging.WARNING):
        check_task_frames(train, few, "va", "M", 0.2)
        check_task_frames(train, dev, "va", "M", 0.2)  # its share: no warning
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "holds 3 of the training split's" in warned[0]
    assert "VA frames" in warned[0] and "\n" not in warned[0]


def test_a_run_selected_by_va_on_a_slice_without_va_is_refused(tmp_path):
    # VA labels only on the clips the dev slice does not hold: selection by VA has nothing
    data = with_va_labels(make_dataset(tmp_path, splits={"train": 4, "val": 1, "test": 1},
                                       frames=40))
    sets = ['head.tasks=["expr","va"]', "train.select_task=va", "head.hidden=8"]
    config = build_config("image", data.store, data.manifests, sets=sets)
    dev = {c.video_id for c in run_splits(data.clips, config, ("expr", "va"))["dev"]}
    clips = [dataclasses.replace(c, va_labels=None, va_split=None)
             if c.video_id in dev else c for c in data.clips]
    with pytest.raises(PipelineError, match="holds no VA frame"):
        TrainingRun(config, tmp_path / "run", clips, FeatureStore(data.store), silent)
    TrainingRun(config, tmp_path / "run", data.clips, FeatureStore(data.store), silent)
