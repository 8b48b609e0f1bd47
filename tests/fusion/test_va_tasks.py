"""Valence-arousal as a task beside expressions and AUs: the loss against the CCC formula, the
three schedules over three tasks, and runs of head.tasks = [expr, au, va] that write VA
predictions and score them as pipeline.metrics.va does; selection by mean CCC."""

import json

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.training.losses import LossConfig, va_batch_loss
from pipeline.fusion.tasks import task_batches
from pipeline.training.tasks import AU, EXPR, VA, epoch_tasks
from pipeline.fusion.train import train
from pipeline.metrics.va import score_va
from pipeline.runs.predictions import Predictions, prediction_path

from .synthetic import make_dataset, with_au_labels, with_va_labels

FAST = ["train.epochs=2", "train.patience=10", "train.batch_size=16"]
SMALL = {
    "image": ["head.hidden=8"],
    "sequence": ["head.dim=16", "head.heads=2", "head.ff=32", "head.length=10",
                 "head.eval_stride=5", "head.train_stride=5"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return with_va_labels(with_au_labels(make_dataset(
        tmp_path_factory.mktemp("va"), splits={"train": 4, "val": 2, "test": 1}, frames=40)))


def numpy_ccc_loss(x, y):
    out = []
    for k in range(2):
        a, b = x[:, k], y[:, k]
        ccc = 2 * np.cov(a, b, bias=True)[0, 1] / (a.var() + b.var() + (a.mean() - b.mean()) ** 2)
        out.append(1 - ccc)
    return float(np.mean(out))


def test_va_loss_against_formula():
    rng = np.random.default_rng(0)
    x = np.tanh(rng.normal(size=(30, 2)))
    y = rng.uniform(-1, 1, (30, 2))
    y_marked = y.copy()
    y_marked[:4] = -5.0
    got = float(va_batch_loss(torch.tensor(x), torch.tensor(y_marked), "ccc"))
    assert got == pytest.approx(numpy_ccc_loss(x[4:], y[4:]), abs=1e-5)
    mse = float(np.mean((x[4:] - y[4:]) ** 2))
    assert float(va_batch_loss(torch.tensor(x), torch.tensor(y_marked), "mse")) \
        == pytest.approx(mse, abs=1e-6)
    both = float(va_batch_loss(torch.tensor(x), torch.tensor(y_marked), "both", 0.5))
    assert both == pytest.approx(numpy_ccc_loss(x[4:], y[4:]) + 0.5 * mse, abs=1e-5)
    values = torch.tensor(x, requires_grad=True)
    none = va_batch_loss(values, torch.full((30, 2), -5.0))
    none.backward()  # no valid frame: zero, still differentiable
    assert float(none.detach()) == 0.0 and values.grad is not None
    with pytest.raises(PipelineError, match="va_loss"):
        LossConfig(va_loss="huber")


def test_schedules_over_three_tasks():
    tags = (EXPR, AU, VA)
    assert [epoch_tasks(True, "epoch", e, tags) for e in range(4)] == [(EXPR,), (AU,), (VA,),
                                                                        (EXPR,)]
    assert epoch_tasks(True, "batch", 0, tags) == tags
    assert epoch_tasks(True, "epoch", 1, (EXPR, VA)) == (VA,)
    examples = {EXPR: np.arange(5), AU: np.arange(10, 13), VA: np.arange(20, 27)}
    batches = task_batches("batch", examples, 2, np.random.default_rng(0))
    assert [int(t[0]) for _, t in batches] == [EXPR, AU, VA, EXPR, AU, VA, EXPR, VA, VA]
    joint = task_batches("joint", examples, 4, np.random.default_rng(0))
    rows = np.concatenate([r for r, _ in joint])
    assert sorted(rows.tolist()) == sorted(np.concatenate(list(examples.values())).tolist())


@pytest.mark.parametrize("method", sorted(SMALL))
def test_three_task_run_writes_and_scores_va(data, method, tmp_path):
    config = build_config(method, data.store, data.manifests,
                          sets=[*FAST, *SMALL[method], 'head.tasks=["expr","au","va"]',
                                "train.select_task=va"])
    result = train(config, tmp_path / "run", data.clips, FeatureStore(data.store))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["tasks"] == ["expr", "au", "va"] and metrics["va_outputs"] == ["va"]
    assert metrics["au_outputs"] == ["au"] and metrics["select_task"] == "va"
    va = Predictions(prediction_path(tmp_path / "run", "val", "va"))
    assert sorted(va) == ["val01"]  # the VA val split (val00 is AU-only: no VA labels)
    clips = {c.clip_id: c for c in data.clips}
    scored = sorted(va)
    truth = np.concatenate([clips[k].va_labels for k in scored])
    values = np.concatenate([va[k] for k in scored])
    assert values.shape == truth.shape and (np.abs(values) <= 1).all()
    assert result.val_va["mean_ccc"] == pytest.approx(score_va(truth, values).mean_ccc, abs=1e-5)
    assert sorted(Predictions(prediction_path(tmp_path / "run", "test", "va"))) == ["test00"]
    assert all("val_va" in h for h in metrics["history"])  # each epoch's selection score


def test_select_task_va_needs_va(data, tmp_path):
    config = build_config("image", data.store, data.manifests,
                          sets=[*FAST, *SMALL["image"], "train.select_task=va"])
    with pytest.raises(PipelineError, match="select_task = va"):
        train(config, tmp_path / "run", data.clips, FeatureStore(data.store))


def test_tasks_option_accepts_va_only_with_expr(data):
    with pytest.raises(PipelineError, match="head.tasks"):
        build_config("image", data.store, data.manifests, sets=['head.tasks=["va"]'])
    config = build_config("image", data.store, data.manifests, sets=['head.tasks=["expr","va"]'])
    assert config.head.tasks == ("expr", "va")


def test_fuse_cli_trains_all_three_and_prints_va(data, tmp_path, capsys):
    from cli.main import main
    assert main(["fuse", "--method", "image", "--store", str(data.store), "--manifests",
                 str(data.manifests), "--out", str(tmp_path / "runs"), *sum(
                     (["--set", s] for s in [*FAST, *SMALL["image"],
                                             'head.tasks=["expr","au","va"]']), [])]) == 0
    out = capsys.readouterr().out
    assert "AU: mean F1" in out and "VA: mean CCC" in out
    assert (tmp_path / "runs" / "image" / "predictions" / "val" / "va.npz").exists()
