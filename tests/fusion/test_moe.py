"""The mixture-of-experts classifier: its formula computed directly, installed in every registered
head (contract: shapes, loss, gradients to the experts), and in a training run's model."""

import copy

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.training.config import ClassifierConfig
from pipeline.fusion.heads import registry
from pipeline.training.losses import LossConfig
from pipeline.training.moe import MixtureOfExperts, install
from pipeline.fusion.train import train

from .test_heads import _head, data  # noqa: F401 (the contract tests' fixture and heads)
from .synthetic import make_dataset


def _softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("top_k", [0, 2])
def test_mixture_computed_directly(top_k):
    torch.manual_seed(0)
    layer = MixtureOfExperts(6, 8, experts=4, top_k=top_k)
    x = torch.randn(5, 6)
    with torch.no_grad():
        out = layer(x).numpy()
    xs = x.numpy().astype(np.float64)
    W, b = layer.experts.weight.detach().numpy(), layer.experts.bias.detach().numpy()
    experts = np.stack([xs @ W[8 * e:8 * e + 8].T + b[8 * e:8 * e + 8] for e in range(4)], 1)
    scores = xs @ layer.router.weight.detach().numpy().T + layer.router.bias.detach().numpy()
    if top_k:
        kth = np.sort(scores, axis=1)[:, -top_k][:, None]
        scores = np.where(scores >= kth, scores, -np.inf)
    w = _softmax(scores)
    assert (np.count_nonzero(w, axis=1) == (top_k or 4)).all()
    np.testing.assert_allclose(out, (w[..., None] * experts).sum(1), atol=1e-5)


def test_config_checks():
    with pytest.raises(PipelineError, match="classifier.experts"):
        ClassifierConfig(experts=1)
    with pytest.raises(PipelineError, match="classifier.top_k"):
        ClassifierConfig(experts=2, top_k=3)


@pytest.mark.parametrize("name", sorted(registry()))
def test_every_head_takes_the_mixture(name, data):  # noqa: F811
    head, table = _head(name, data)
    replaced = install(head, ClassifierConfig(experts=3, top_k=2))
    assert replaced >= 1
    assert not [m for m in head.modules() if isinstance(m, torch.nn.Linear)
                and m.out_features == 8]
    counts = head.trainable(table).astype(np.int64)
    examples = head.examples(table, counts, np.random.default_rng(0))
    inputs, targets, weights = head.batch(table, examples[:5], counts)
    logits = head(inputs)
    for value in logits.values():
        assert value.shape == (*targets.shape, 8)
    head.loss(logits, targets, weights, LossConfig()).backward()
    experts = [m for m in head.modules() if isinstance(m, MixtureOfExperts)]
    assert any(m.experts.weight.grad is not None and m.experts.weight.grad.abs().sum() > 0
               for m in experts)
    head.eval()
    probs = head.derive(head.predict(table, batch_size=16))
    for value in probs.values():
        np.testing.assert_allclose(value.sum(axis=1), 1.0, atol=1e-5)


def test_a_run_trains_the_mixture(tmp_path):
    data = make_dataset(tmp_path / "d", splits={"train": 2, "val": 1}, frames=30)
    config = build_config("gated", data.store, data.manifests,
                          sets=["train.epochs=1", "head.dim=8", "classifier.experts=2"])
    result = train(config, tmp_path / "run", data.clips, FeatureStore(data.store))
    assert result.epochs_run == 1
    saved = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert any(key.endswith("router.weight") for key in saved["model"])
    assert saved["config"]["classifier"] == {"experts": 2, "top_k": 0}


def test_runs_written_before_the_new_options_still_resume(tmp_path):
    from pipeline.fusion.rundir import changes, identity

    new = identity(build_config("mfm", tmp_path, tmp_path), {"swin": "k"})
    old = copy.deepcopy(new)  # as a run written before classifier.* and modality dropout
    del old["config"]["classifier"]
    del old["config"]["head"]["modality_dropout"], old["config"]["head"]["modality_dropout_which"]
    assert changes(old, new) == []
    changed = identity(build_config("mfm", tmp_path, tmp_path,
                                    sets=["classifier.experts=2"]), {"swin": "k"})
    assert changes(old, changed) == ["classifier.experts"]


def test_a_run_written_before_the_new_options_resumes(tmp_path):
    data = make_dataset(tmp_path / "d", splits={"train": 2, "val": 1}, frames=30)
    sets = ["head.dim=16", "head.heads=2", "head.context=1"]
    first = build_config("mfm", data.store, data.manifests, sets=["train.epochs=1", *sets])
    train(first, tmp_path / "run", data.clips, FeatureStore(data.store))
    path = tmp_path / "run" / "checkpoint.pt"
    saved = torch.load(path, weights_only=True)
    for config in (saved["identity"]["config"], saved["config"]):  # as an older version wrote it
        del config["classifier"], config["head"]["modality_dropout"]
    torch.save(saved, path)
    more = build_config("mfm", data.store, data.manifests, sets=["train.epochs=2", *sets])
    result = train(more, tmp_path / "run", data.clips, FeatureStore(data.store))
    assert result.resumed_from == 1 and result.epochs_run == 2
    other = build_config("mfm", data.store, data.manifests,
                         sets=["train.epochs=3", "head.modality_dropout=0.2", *sets])
    with pytest.raises(PipelineError, match=r"\(head.modality_dropout differ\)"):
        train(other, tmp_path / "run", data.clips, FeatureStore(data.store))
