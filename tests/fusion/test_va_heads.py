"""AUs and VA on the heads that took only expressions before (mfm, gated, xattn, tcn, audio): a
run of head.tasks = [expr, au, va] under each schedule writes AU and VA predictions for the val
and test clips, scored as pipeline.metrics.va scores them; an epoch-schedule VA epoch changes
only the trunk and the VA layer; AU and VA examples of the audio heads use every window with
audio (label purity concerns the expression labels)."""

import json

import numpy as np
import pytest
import torch

from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.data import FeatureRequest, check_inputs, load_table
from pipeline.fusion.heads import head_class
from pipeline.fusion.heads.unimodal import audio_tokens, purity_rows
from pipeline.fusion.train import train
from pipeline.metrics.va import score_va
from pipeline.runs.predictions import Predictions, prediction_path

from .synthetic import make_dataset, with_au_labels, with_va_labels

FAST = ["train.epochs=3", "train.patience=10", "train.batch_size=16"]
SMALL = {
    "audio": ["head.hidden=8"],
    "mfm": ["head.dim=16", "head.heads=2"],
    "gated": ["head.dim=16"],
    "xattn": ["head.dim=16", "head.heads=2", "head.ff=32", "head.length=12",
              "head.eval_stride=6"],
    "tcn": ["head.dim=16", "head.levels=3", "head.length=12", "head.eval_stride=6"],
}
SCHEDULES = {"audio": "epoch", "mfm": "batch", "gated": "joint", "xattn": "batch", "tcn": "epoch"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return with_va_labels(with_au_labels(make_dataset(
        tmp_path_factory.mktemp("va_heads"), splits={"train": 4, "val": 2, "test": 1},
        frames=40)))


@pytest.mark.parametrize("method", sorted(SMALL))
def test_three_tasks_on_every_head(data, method, tmp_path):
    torch.manual_seed(0)
    config = build_config(method, data.store, data.manifests,
                          sets=[*FAST, *SMALL[method], 'head.tasks=["expr","au","va"]',
                                f"train.task_schedule={SCHEDULES[method]}",
                                "train.select_task=va"])
    result = train(config, tmp_path / "run", data.clips, FeatureStore(data.store))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tasks"] == ["expr", "au", "va"]
    assert metrics["au_outputs"] == ["au"] and metrics["va_outputs"] == ["va"]
    va = Predictions(prediction_path(tmp_path / "run", "val", "va"))
    assert sorted(va) == ["val01"]  # val00 is AU-only: no VA labels
    clips = {c.clip_id: c for c in data.clips}
    truth = np.concatenate([clips[k].va_labels for k in sorted(va)])
    values = np.concatenate([va[k] for k in sorted(va)])
    assert values.shape == truth.shape and np.isfinite(values).all()
    assert (np.abs(values) <= 1).all() and values.std(axis=0).min() > 0
    assert result.val_va["mean_ccc"] == pytest.approx(score_va(truth, values).mean_ccc, abs=1e-5)
    au = Predictions(prediction_path(tmp_path / "run", "val", "au"))
    assert sorted(au) == ["train00", "val00", "val01"]  # the AU val split
    probs = np.concatenate([au[k] for k in sorted(au)])
    assert probs.shape[1] == 12 and ((probs >= 0) & (probs <= 1)).all()
    assert sorted(Predictions(prediction_path(tmp_path / "run", "test", "va"))) == ["test00"]
    assert len(metrics["history"]) == 3 and all("val_va" in h for h in metrics["history"])


@pytest.mark.parametrize("method", ["mfm", "xattn"])
def test_va_epoch_trains_only_trunk_and_va_layer(data, method, tmp_path):
    """Under the epoch schedule the third epoch trains VA alone: the expression and AU layers get
    no gradient, so they keep their weights while the VA layer moves."""
    from pipeline.fusion.training_run import TrainingRun
    from pipeline.progress import silent
    config = build_config(method, data.store, data.manifests,
                          sets=[*FAST, *SMALL[method], 'head.tasks=["expr","au","va"]',
                                "train.task_schedule=epoch"])
    run = TrainingRun(config, tmp_path, data.clips, FeatureStore(data.store), silent)
    run.build()
    run.au_pos_weight = run.positive_weights()
    run.epoch = 2  # epochs cycle expr, au, va
    expr_layer = run.head.y_fusion if method == "mfm" else run.head.classify
    before = {name: p.detach().clone() for name, p in
              [("expr", expr_layer.weight), ("au", run.head.au_layer.weight),
               ("va", run.head.va_layer.weight)]}
    rates = np.ones(8)
    run.train_epoch(rates)
    assert torch.equal(expr_layer.weight, before["expr"])
    assert torch.equal(run.head.au_layer.weight, before["au"])
    assert not torch.equal(run.head.va_layer.weight, before["va"])


def test_aux_examples_use_every_audio_window(data):
    """An AU or VA example (not drawn for expressions) keeps its audio windows even where the
    expression-purity test fails; an expression example loses them, as before."""
    clips = {c.clip_id: c for c in data.clips}
    config = build_config("audio", data.store, data.manifests,
                          sets=['head.tasks=["expr","va"]', "sampling.purity=true"])
    request = head_class("audio").request(config.head, config.sampling)
    request = FeatureRequest(arrays=request.arrays, audio=request.audio, purity=request.purity,
                             tasks=("expr", "va"))
    store = FeatureStore(data.store)
    dims = check_inputs(store, [clips["train01"]], request)
    table = load_table(store, [clips["train01"]], request, dims, train=True)
    failing = np.flatnonzero(table.audio & ~table.window_ok.all(axis=1))
    assert failing.size  # unlabelled frames and impure windows
    counts = np.zeros(table.n_rows, np.int64)
    counts[failing[::2]] = 1  # half drawn for expressions
    _, mask = audio_tokens(table, config.head.audio, failing, purity_rows(failing, counts))
    mask = mask.numpy()
    drawn = counts[failing] > 0
    assert (mask[~drawn] == table.audio[failing][~drawn, None]).all()
    assert (mask[drawn] == table.window_ok[failing][drawn]).all()
    assert not purity_rows(failing, None).any()
