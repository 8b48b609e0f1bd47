"""The ``dan`` head: each attention unit against a numpy computation of its formula, the affinity
and partition losses against their formulas, gradients to every parameter, training on demo-like
data, and the attention maps a finished run writes."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.heads.dan import (
    DANConfig,
    DANHead,
    affinity_loss,
    partition_loss,
    write_attention,
)
from pipeline.training.dan import ChannelAttention, SpatialAttention
from pipeline.training.losses import LossConfig, batch_loss
from pipeline.runs.layout import RunPaths
from pipeline.fusion.config import build_config
from pipeline.runs.predictions import Predictions, prediction_path
from stages.fuse import fuse

from .synthetic import make_dataset


def _randomise_bn(module, rng):
    """Eval-mode batch norms with arbitrary statistics, so the reference must apply them."""
    for bn in module.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            n = bn.num_features
            bn.running_mean.copy_(torch.from_numpy(rng.normal(size=n)))
            bn.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, size=n)))
            bn.weight.data.copy_(torch.from_numpy(rng.normal(size=n)))
            bn.bias.data.copy_(torch.from_numpy(rng.normal(size=n)))
    module.eval()


def _bn(x, bn, axis):
    shape = [1] * x.ndim
    shape[axis] = -1
    p = {k: getattr(bn, k).detach().numpy().reshape(shape)
         for k in ("running_mean", "running_var", "weight", "bias")}
    return (x - p["running_mean"]) / np.sqrt(p["running_var"] + bn.eps) * p["weight"] + p["bias"]


def _conv(x, weight):
    """Cross-correlation of x [B, Ci, H, W] with weight [Co, Ci, kh, kw], zero 'same' padding."""
    b, _, h, w = x.shape
    kh, kw = weight.shape[2:]
    padded = np.pad(x, ((0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)))
    out = np.zeros((b, weight.shape[0], h, w))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("bchw,oc->bohw", padded[:, :, i:i + h, j:j + w], weight[:, :, i, j])
    return out


def _branch(x, sequential):
    conv, bn = sequential
    return _bn(_conv(x, conv.weight.detach().numpy().astype(np.float64)), bn, 1)


def test_spatial_unit_mask_is_the_sum_of_its_convolutions():
    rng = np.random.default_rng(0)
    unit = SpatialAttention(8)
    _randomise_bn(unit, rng)
    x = rng.normal(size=(3, 8, 5, 4))
    out, mask = unit(torch.from_numpy(x).float())
    assert out.shape == (3, 8, 5, 4) and mask.shape == (3, 1, 5, 4)
    y = _branch(x, unit.reduce)
    expected = np.maximum(_branch(y, unit.square) + _branch(y, unit.row) + _branch(y, unit.column),
                          0).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(mask.detach().numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.detach().numpy(), x * expected, rtol=1e-4, atol=1e-3)
    assert (mask >= 0).all() and (mask > 0).any()


def test_channel_unit_weights_the_pooled_channels():
    rng = np.random.default_rng(1)
    unit = ChannelAttention(8, 3)
    _randomise_bn(unit, rng)
    x = rng.normal(size=(4, 8, 3, 3))
    out, mask = unit(torch.from_numpy(x).float())
    assert out.shape == (4, 8) and mask.shape == (4, 8)
    first, bn, _, second, _ = unit.weigh
    pooled = x.mean(axis=(2, 3))
    hidden = np.maximum(_bn(pooled @ first.weight.detach().numpy().T, bn, 1), 0)
    logits = hidden @ second.weight.detach().numpy().T + second.bias.detach().numpy()
    expected = 1 / (1 + np.exp(-logits))
    np.testing.assert_allclose(mask.detach().numpy(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out.detach().numpy(), pooled * expected, rtol=1e-5, atol=1e-6)


def _small_head(heads=3, **changes):
    torch.manual_seed(0)
    config = DANConfig(width=16, heads=heads, reduction=4, **changes)
    return DANHead(config, {"swin_tokens": (4, 3, 10)})


def test_head_shapes_attention_and_log_softmax_fusion():
    head = _small_head()
    head.eval()
    image = torch.randn(5, 10, 4, 3)
    out = head({"image": image})
    assert set(out) == {"main"} and out["main"].shape == (5, 8)
    assert out.extras["features"].shape == (5, 16) and out.extras["heads"].shape == (5, 3, 16)
    # log-softmax over the heads: each channel's exp sums to 1 across heads
    np.testing.assert_allclose(out.extras["heads"].exp().sum(dim=1).detach(), 1.0, atol=1e-5)
    spatial, channel = head.attention({"image": image})
    assert spatial.shape == (5, 3, 4, 3) and channel.shape == (5, 3, 16)
    assert (spatial >= 0).all() and ((channel > 0) & (channel < 1)).all()
    # each head's map is its own spatial unit's mask on the adapter's features
    features = head.adapter(image)
    for k, unit in enumerate(head.heads):
        torch.testing.assert_close(spatial[:, k], unit.spatial(features)[1][:, 0])


def test_affinity_loss_is_its_formula():
    rng = np.random.default_rng(2)
    features, centres = rng.normal(size=(6, 5)), rng.normal(size=(8, 5))
    targets = np.array([0, 3, 3, -1, 7, 1])
    weights = np.array([1.0, 2.0, 1.0, 5.0, 0.0, 3.0])
    got = affinity_loss(torch.from_numpy(features), torch.from_numpy(targets),
                        torch.from_numpy(centres), torch.from_numpy(weights))
    keep = (targets >= 0) & (weights > 0)
    distance = ((features[keep] - centres[targets[keep]]) ** 2).sum(axis=1)
    expected = (weights[keep] * distance).sum() / weights[keep].sum() / centres.var(0, ddof=1).sum()
    assert float(got) == pytest.approx(expected, rel=1e-10)
    # without weights: DAN's batch mean
    got = affinity_loss(torch.from_numpy(features), torch.from_numpy(targets),
                        torch.from_numpy(centres))
    keep = targets >= 0
    distance = ((features[keep] - centres[targets[keep]]) ** 2).sum(axis=1)
    assert float(got) == pytest.approx(distance.mean() / centres.var(0, ddof=1).sum(), rel=1e-10)


def test_partition_loss_is_its_formula():
    rng = np.random.default_rng(3)
    heads = rng.normal(size=(4, 3, 6))
    variance = heads.var(axis=1, ddof=1)
    eps = np.finfo(np.float64).eps
    code = partition_loss(torch.from_numpy(heads), "code")
    paper = partition_loss(torch.from_numpy(heads), "paper")
    assert float(code) == pytest.approx(np.log(1 + 3 / (variance.mean() + eps)), rel=1e-10)
    assert float(paper) == pytest.approx(np.log(1 + 3 / (variance + eps)).mean(), rel=1e-10)
    assert float(partition_loss(torch.from_numpy(heads[:, :1]))) == 0.0  # one head: none
    # heads that agree cost more than heads that differ
    assert float(partition_loss(torch.from_numpy(heads * 0.1))) > float(code)


def test_loss_adds_the_weighted_auxiliary_losses():
    head = _small_head(affinity_weight=0.5, partition_weight=2.0)
    image, targets = torch.randn(6, 10, 4, 3), torch.tensor([0, 1, 2, 3, -1, 5])
    out = head({"image": image})
    config = LossConfig(kind="focal")
    expected = (batch_loss(out["main"], targets, None, config)
                + 0.5 * affinity_loss(out.extras["features"], targets, head.centres)
                + 2.0 * partition_loss(out.extras["heads"], "code"))
    torch.testing.assert_close(head.loss(out, targets, None, config), expected)
    with pytest.raises(TypeError):
        head.loss(dict(out), targets, None, config)


def test_gradients_reach_every_parameter():
    head = _small_head()
    out = head({"image": torch.randn(8, 10, 4, 3)})
    head.loss(out, torch.arange(8), None, LossConfig(kind="focal")).backward()
    for name, parameter in head.named_parameters():
        assert parameter.grad is not None and float(parameter.grad.abs().sum()) > 0, name


def test_single_example_training_batch():
    head = _small_head()
    out = head({"image": torch.randn(1, 10, 4, 3)})
    head.loss(out, torch.tensor([2]), None, LossConfig()).backward()
    assert torch.isfinite(out["main"]).all()


def test_config_and_map_checks():
    with pytest.raises(PipelineError, match="partition"):
        DANConfig(partition="both")
    with pytest.raises(PipelineError, match="face map"):
        DANHead(DANConfig(image="swin"), {"swin": (768,)})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("dan"), splits={"train": 4, "val": 2, "test": 1},
                        frames=60, token_maps=True, noise=0.4)


def test_preset_jeong2022_sets_the_papers_table(data):
    config = build_config("dan", data.store, data.manifests, preset="jeong2022")
    assert (config.train.lr, config.train.batch_size, config.train.epochs) == (1e-4, 1024, 8)
    assert config.train.weight_decay == 1e-4 and config.head.heads == 4
    assert config.loss.kind == "focal"
    assert config.head.image == "timm_map" and config.bag.k == 5  # ResNet-50's map, a bag of 5
    with pytest.raises(PipelineError, match="preset jeong2022 .* not image"):
        build_config("image", data.store, data.manifests, preset="jeong2022")


def test_trains_beats_chance_and_writes_attention(data, tmp_path):
    config = build_config("dan", data.store, data.manifests, preset="jeong2022",
                          sets=["train.epochs=3", "train.batch_size=32", "train.lr=0.003",
                                "head.width=16", "head.reduction=4",
                                # on Swin's map (the README's line), one model
                                "head.image=swin_tokens", "bag.k=0",
                                # the synthetic split is small: all training clips train
                                "train.select_on=val"])
    result = fuse(config, tmp_path, name="dan")  # the stage: training, then attention.npz
    probs = dict(Predictions(prediction_path(result.run_dir, "val", "main")))
    val = [clip for clip in data.clips if clip.split == "val"]
    labels = np.concatenate([clip.labels for clip in val])
    predicted = np.concatenate([probs[clip.clip_id].argmax(1) for clip in val])
    keep = labels >= 0
    f1 = f1_score(labels[keep], predicted[keep], average="macro", labels=range(8))
    assert f1 == pytest.approx(result.val_macro_f1["main"], abs=1e-6)
    assert f1 > 0.25  # chance is 1/8; the face alone allows 0.5 on these data

    saved = np.load(RunPaths(result.run_dir).attention)  # one frame per validation clip
    assert saved["spatial"].shape == (2, 4, 2, 2) and saved["channel"].shape == (2, 4, 16)
    assert list(saved["clip_ids"]) == [clip.clip_id for clip in val]
    assert saved["probs"].shape == (2, 8)
    # the saved frame's probabilities are the run's prediction for it
    for clip_id, frame, p in zip(saved["clip_ids"], saved["frames"], saved["probs"]):
        np.testing.assert_allclose(p, probs[clip_id][frame], atol=1e-5)
    # fewer frames than clips: clips spread over the split
    path = write_attention(result.run_dir, FeatureStore(data.store), data.clips, frames=1)
    assert list(np.load(path)["clip_ids"]) == [val[0].clip_id]
