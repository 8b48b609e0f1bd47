"""The weights' moving average (train.ema_epochs): its formula computed directly, the swap in and
out, what a run does with it, and old runs (written without it) not resuming under it."""

import math

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion import training_run
from pipeline.fusion.averaging import WeightAverage
from pipeline.fusion.config import TrainConfig, build_config
from pipeline.fusion.rundir import changes, identity
from pipeline.fusion.train import train
from pipeline.runs.predictions import Predictions, prediction_path
from pipeline.config import to_dict

from .synthetic import make_dataset


def _module() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))


def _set_weights(module: torch.nn.Module, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Give every floating-point tensor new values (a stand-in for an optimiser step)."""
    with torch.no_grad():
        for value in module.state_dict().values():
            if value.dtype.is_floating_point:
                value.copy_(torch.from_numpy(rng.standard_normal(value.shape)))
            else:
                value.add_(1)
    return {k: v.double().numpy().copy() for k, v in module.state_dict().items()}


def test_average_follows_its_formula():
    module, rng, epochs = _module(), np.random.default_rng(0), 1.5
    average = WeightAverage(epochs)
    expected: dict[str, np.ndarray] = {}
    # epoch 1 (its length unknown): the average is the weights themselves
    for _ in range(3):
        expected = _set_weights(module, rng)
        average.update(module, 8)
    average.end_epoch(24)
    # epoch 2 on: d = exp(-n / (E * N)) per step, N the previous epoch's examples
    for n in (8, 8, 5):
        weights = _set_weights(module, rng)
        d = math.exp(-n / (epochs * 24))
        expected = {k: d * expected[k] + (1 - d) * w if w.dtype == np.float64 and
                    module.state_dict()[k].dtype.is_floating_point else w
                    for k, w in weights.items()}
        average.update(module, n)
    for name, value in average.average.items():
        np.testing.assert_allclose(value.double().numpy(), expected[name], rtol=1e-5, atol=1e-6)
    assert average.average["1.num_batches_tracked"].item() == 6  # integers are copied


def test_applied_swaps_the_average_in_and_the_weights_back():
    module, rng = _module(), np.random.default_rng(1)
    average = WeightAverage(1.0)
    _set_weights(module, rng)
    average.update(module, 4)
    average.end_epoch(4)
    weights = _set_weights(module, rng)
    average.update(module, 4)
    with average.applied(module):
        inside = {k: v.clone() for k, v in module.state_dict().items()}
    for name, value in module.state_dict().items():
        assert np.array_equal(value.double().numpy(), weights[name])
        assert torch.equal(inside[name], average.average[name])
    off = WeightAverage(0.0)
    off.update(module, 4)
    assert off.average is None
    with off.applied(module):
        pass
    for name, value in module.state_dict().items():
        assert np.array_equal(value.double().numpy(), weights[name])


def test_negative_horizon_is_refused():
    with pytest.raises(PipelineError, match="ema_epochs"):
        TrainConfig(ema_epochs=-1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("averaging"), splits={"train": 3, "val": 1},
                        frames=40)


def _run(data, run_dir, *sets):
    config = build_config("image", data.store, data.manifests,
                          sets=["train.patience=10", "train.batch_size=16", *sets])
    result = train(config, run_dir, data.clips, FeatureStore(data.store))
    return result, dict(Predictions(prediction_path(run_dir, "val", "main")))


def test_a_run_scores_and_keeps_the_average(data, tmp_path, monkeypatch):
    one_on = _run(data, tmp_path / "a", "train.epochs=1")[1]
    one_off = _run(data, tmp_path / "b", "train.epochs=1", "train.ema_epochs=0")[1]
    # after the first epoch the average is the weights themselves
    assert all(np.array_equal(one_on[c], one_off[c]) for c in one_on)
    on = _run(data, tmp_path / "c", "train.epochs=3")[0]
    off = _run(data, tmp_path / "d", "train.epochs=3", "train.ema_epochs=0")[0]
    saved_on, saved_off = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=False)
                           for d in "cd")
    floats = [k for k, v in saved_on["model"].items() if v.dtype.is_floating_point]
    # averaging never touches training: the same steps, the same weights, the same losses
    assert all(torch.equal(saved_on["model"][k], saved_off["model"][k]) for k in floats)
    assert [h["train_loss"] for h in on.metrics.history] == \
        [h["train_loss"] for h in off.metrics.history]
    # but what is scored and kept is the average, which is not the last step's weights
    average = saved_on["average"]["average"]
    assert saved_on["average"]["epoch_examples"] == on.metrics.history[-1]["examples"]
    assert any(not torch.equal(average[k], saved_on["model"][k]) for k in floats)
    assert saved_off["average"]["average"] is None
    # every epoch scoring better than the one before: the last epoch's average is what is kept
    scores = iter(range(100))
    monkeypatch.setattr(training_run, "selection_score", lambda *args: float(next(scores)))
    last = _run(data, tmp_path / "e", "train.epochs=3")[0]
    assert last.best_epoch == 3
    saved = torch.load(tmp_path / "e" / "checkpoint.pt", weights_only=False)
    best = torch.load(tmp_path / "e" / "best.pt", weights_only=False)["model"]
    assert all(torch.equal(best[k], saved["average"]["average"][k]) for k in floats)
    assert any(not torch.equal(best[k], saved["model"][k]) for k in floats)


def test_a_run_written_before_the_average_does_not_resume_under_it(data):
    config = build_config("image", data.store, data.manifests)
    old = identity(config, {"main": "x"})
    del old["config"]["train"]["ema_epochs"]  # what a run written before the option holds
    assert changes(old, identity(config, {"main": "x"})) == ["train.ema_epochs"]
    off = build_config("image", data.store, data.manifests, sets=["train.ema_epochs=0"])
    assert changes(old, identity(off, {"main": "x"})) == []
    assert to_dict(config)["train"]["ema_epochs"] == 1.0
