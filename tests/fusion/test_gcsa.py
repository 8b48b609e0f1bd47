"""Yu et al. 2025: GCSA against section 3.3 computed directly, the channel shuffle, masking in
training only, the coarse-fine loss against equation 6 in numpy, the equal-interval frames, and the
``gcsa`` head trained by the loop on the synthetic tables."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.data import check_inputs, load_table
from pipeline.fusion.gcsa import GCSA, channel_shuffle, channel_unshuffle
from pipeline.fusion.heads.gcsa import GCSAConfig, GCSAHead, SpecMasking
from pipeline.training.losses import LossConfig, batch_loss
from pipeline.fusion.config import build_config
from pipeline.training.sampling import SamplingConfig, equal_interval
from pipeline.fusion.train import train

from .synthetic import make_dataset

SMALL = {"width": 8, "audio_width": 4, "window": 8, "time_mask": 4, "freq_mask": 4}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("gcsa"), splits={"train": 6, "val": 3},
                        frames=80, token_maps=True, logmel=True, noise=0.4)


# ---- GCSA -----------------------------------------------------------------------------------------


def test_gcsa_keeps_shapes_and_maps_lie_in_0_1():
    torch.manual_seed(0)
    module = GCSA(16).eval()
    x = torch.randn(3, 16, 5, 7)
    assert module(x).shape == x.shape
    with torch.no_grad():
        maps = module.channel_map(x), module.spatial_map(channel_shuffle(x, 4))
    for attention in maps:
        assert attention.shape == x.shape
        assert float(attention.min()) > 0.0 and float(attention.max()) < 1.0
    with pytest.raises(PipelineError, match="divisible"):
        GCSA(18)


def test_channel_shuffle_is_a_permutation_and_unshuffle_inverts_it():
    x = torch.arange(12.0).reshape(1, 12, 1, 1).expand(2, 12, 3, 2).contiguous()
    order = channel_shuffle(x, 4)[0, :, 0, 0].long().tolist()
    assert sorted(order) == list(range(12)) and order != list(range(12))
    # 4 groups of 3 channels, (group, channel) transposed: position k * 4 + g holds g * 3 + k
    assert order == [g * 3 + k for k in range(3) for g in range(4)]
    assert torch.equal(channel_unshuffle(channel_shuffle(x, 4), 4), x)


def test_gcsa_equals_section_3_3_computed_directly():
    torch.manual_seed(1)
    module = GCSA(8)
    for bn in (module.spatial[1], module.spatial[4]):  # non-trivial batch-norm statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
    module.eval()
    x = torch.randn(2, 8, 4, 5)
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    # channel attention: channels last, Linear-ReLU-Linear (reduction 4), back, sigmoid, multiply
    w1, b1 = (t.detach().numpy() for t in (module.channel_mlp[0].weight, module.channel_mlp[0].bias))
    w2, b2 = (t.detach().numpy() for t in (module.channel_mlp[2].weight, module.channel_mlp[2].bias))
    assert w1.shape == (2, 8) and w2.shape == (8, 2)
    last = x.numpy().transpose(0, 2, 3, 1)
    hidden = np.maximum(last @ w1.T + b1, 0)
    f_channel = sigmoid((hidden @ w2.T + b2).transpose(0, 3, 1, 2)) * x.numpy()
    # channel shuffle in 4 groups
    f_shuffle = f_channel.reshape(2, 4, 2, 4, 5).transpose(0, 2, 1, 3, 4).reshape(2, 8, 4, 5)

    def conv_bn(v, conv, bn):
        out = F.conv2d(torch.from_numpy(v), conv.weight, conv.bias, padding=3).detach().numpy()
        scale = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().numpy()
        shift = (bn.bias - bn.running_mean * bn.weight / torch.sqrt(bn.running_var + bn.eps))
        return out * scale[:, None, None] + shift.detach().numpy()[:, None, None]

    # spatial attention: 7x7 conv to C/4, BN, ReLU, 7x7 conv back to C, BN, sigmoid, multiply
    mid = np.maximum(conv_bn(f_shuffle, module.spatial[0], module.spatial[1]), 0)
    expected = sigmoid(conv_bn(mid, module.spatial[3], module.spatial[4])) * f_shuffle
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), expected, rtol=1e-4, atol=1e-5)


# ---- masking ---------------------------------------------------------------------------------------


def test_masking_changes_training_inputs_only():
    torch.manual_seed(0)
    masking = SpecMasking(time_mask=6, freq_mask=6)
    x = torch.randn(16, 1, 20, 30) + 5.0  # no cell is 0 before masking
    masking.eval()
    assert torch.equal(masking(x), x)
    masking.train()
    masked = masking(x)
    assert not torch.equal(masked, x)
    changed = masked != x
    assert bool((masked[changed] == 0).all())  # masked cells are set to 0 (the window's mean)
    # whole mel bands and whole time steps are masked, per window
    bands = changed.all(dim=3).any(dim=(1, 2))
    steps = changed.all(dim=2).any(dim=(1, 2))
    assert bool((bands | steps).any())


def test_use_gcsa_switch(data):
    with_gcsa, _ = _head(data, GCSAConfig(**SMALL))
    base, _ = _head(data, GCSAConfig(**SMALL, use_gcsa=False))
    assert sum(isinstance(m, GCSA) for m in with_gcsa.modules()) == 2
    assert not any(isinstance(m, GCSA) for m in base.modules())


def test_head_masks_in_training_and_is_deterministic_at_inference(data):
    config = GCSAConfig(**SMALL)
    head, table = _head(data, config)
    inputs, _, _ = head.batch(table, np.arange(8), None)
    head.eval()
    with torch.no_grad():
        first = head(inputs)["audio"]
        assert torch.equal(first, head(inputs)["audio"])
    head.audio_branch.train()  # masking on: the same windows give other features
    torch.manual_seed(3)
    with torch.no_grad():
        assert not torch.allclose(head.audio_branch(inputs["audio"]), head.audio_branch(inputs["audio"]))


# ---- coarse-fine loss ------------------------------------------------------------------------------


def _quadrant_mu(config):
    pairs = [(1, 2), (1, 3), (1, 4), (2, 3), (2, 4), (3, 4)]
    mu = np.zeros((5, 5))
    for (a, b), value in zip(pairs, config.mu):
        mu[a, b] = mu[b, a] = value
    return mu


@pytest.mark.parametrize("prediction", ["argmax", "expected"])
def test_coarse_fine_equals_equation_6(prediction):
    g = torch.Generator().manual_seed(0)
    logits, targets = torch.randn(12, 8, generator=g) * 2, torch.randint(0, 8, (12,), generator=g)
    config = LossConfig(kind="coarse_fine", mu=(0.1, 0.7, 0.3, 0.5, 1.3, 0.2),
                        cf_prediction=prediction)
    p = torch.softmax(logits.double(), 1).numpy()
    y = targets.numpy()
    q = np.array(config.quadrants)
    mu = _quadrant_mu(config)

    def coefficient(true, predicted):
        return 0.0 if q[true] < 0 or q[predicted] < 0 else mu[q[true], q[predicted]]

    total = 0.0
    for i in range(12):
        if prediction == "argmax":
            weight = coefficient(y[i], p[i].argmax())
        else:
            weight = sum(p[i, k] * coefficient(y[i], k) for k in range(8))
        total += (1 + weight) * np.log(p[i, y[i]])
    expected = -total / 12
    assert float(batch_loss(logits, targets, None, config)) == pytest.approx(expected, rel=1e-5)
    assert float(batch_loss(logits, targets, None, config)) > float(
        F.cross_entropy(logits, targets))  # some predictions fall in another quadrant


def test_coarse_fine_with_zero_mu_is_cross_entropy():
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(20, 8, generator=g), torch.randint(0, 8, (20,), generator=g)
    config = LossConfig(kind="coarse_fine", mu=(0.0,) * 6)
    assert float(batch_loss(logits, targets, None, config)) == pytest.approx(
        float(F.cross_entropy(logits, targets)), rel=1e-6)


def test_coarse_fine_config_is_checked():
    with pytest.raises(PipelineError, match="loss.mu"):
        LossConfig(kind="coarse_fine", mu=(1.0,) * 5)
    with pytest.raises(PipelineError, match="loss.quadrants"):
        LossConfig(kind="coarse_fine", quadrants=(0,) * 8)


# ---- equal-interval frames, the head, the preset ---------------------------------------------------


def test_equal_interval_restarts_in_every_clip():
    keep = equal_interval(np.array([0, 7, 10, 15]), 3)
    assert np.flatnonzero(keep).tolist() == [0, 3, 6, 7, 10, 13]
    assert equal_interval(np.array([0, 4]), 1).all()
    with pytest.raises(PipelineError, match="interval"):
        SamplingConfig(interval=0)


def _head(data, config):
    request = GCSAHead.request(config, SamplingConfig())
    store = FeatureStore(data.store)
    dims = check_inputs(store, data.clips, request)
    torch.manual_seed(0)
    return GCSAHead(config, dims), load_table(store, data.clips, request, dims, train=True)


def test_windows_follow_each_clip_and_frame(data):
    head, table = _head(data, GCSAConfig(**SMALL))
    rows = np.array([0, 5, table.offsets[1] + 3])
    windows, lengths = head.audio_windows(table, rows)
    assert windows.shape == (3, 20, 16) and lengths.tolist() == [20, 20, 20]  # 8 frames at 10 fps
    np.testing.assert_allclose(windows.mean(axis=(1, 2)), 0.0, atol=1e-5)  # standardised
    # row 5's window: log-mel rows 4 .. 23 (centre 5.5 frames = 13.75 mel rows), standardised
    mel = table.series["logmel"][0].data[4:24]
    np.testing.assert_allclose(windows[1], (mel - mel.mean()) / (mel.std() + 1e-5), atol=1e-4)


def test_clip_without_audio(tmp_path):
    data = make_dataset(tmp_path, splits={"train": 2, "val": 1}, frames=30, token_maps=True,
                        logmel=True, no_audio=("train01",))
    head, table = _head(data, GCSAConfig(**SMALL))
    # zero windows (of another length: no log-mel rate to go by), never trained, still predicted
    silent = table.clip_ids.index("train01")
    rows = np.array([0, table.offsets[silent] + 2])
    windows, lengths = head.audio_windows(table, rows)
    assert lengths[1] < lengths[0] and not windows[1].any()
    assert not head.trainable(table)[table.clip_rows(silent)].any()
    head.eval()
    probs = head.derive(head.predict(table, batch_size=7))
    assert np.isfinite(probs["fusion"]).all() and probs["audio"].shape == (table.n_rows, 8)


def test_alternate_training_updates_one_branch_per_step(data):
    head, table = _head(data, GCSAConfig(**SMALL, training="alternate"))
    inputs, targets, _ = head.batch(table, np.arange(6), np.ones(table.n_rows, np.int64))
    for branch, other in (("image", "audio"), ("audio", "image")):
        head.zero_grad(set_to_none=True)
        head.loss(head(inputs), targets, None, LossConfig()).backward()
        assert getattr(head, f"fc_{branch}")[1].weight.grad is not None
        assert getattr(head, f"fc_{other}")[1].weight.grad is None
    assert int(head.steps) == 2  # in the state dict: a resumed run alternates on


@pytest.mark.slow
def test_gcsa_head_trains_and_fuses(data, tmp_path):
    config = build_config("gcsa", data.store, data.manifests, sets=[
        *(f"head.{k}={v}" for k, v in SMALL.items()), "train.epochs=8", "train.patience=8",
        "train.lr=0.01", "loss.kind=coarse_fine", "sampling.interval=2",
        "train.select_on=val"])  # the synthetic split is small: all training clips train
    result = train(config, tmp_path / "run", data.clips, FeatureStore(data.store))
    f1 = result.val_macro_f1
    # image alone can reach 0.5, audio alone 0.25, fusion about 1 on these tables
    assert f1["image"] > 0.3 and f1["audio"] > 0.15 and f1["fusion"] > max(f1["image"], f1["audio"])
    assert len(result.metrics.grid["macro_f1"]) == 5


def test_preset_yu2025_is_the_papers_setting(data):
    config = build_config("gcsa", data.store, data.manifests, preset="yu2025")
    assert (config.loss.kind, config.train.optimizer, config.train.momentum,
            config.train.batch_size, config.train.epochs) == ("coarse_fine", "sgd", 0.9, 16, 300)
    assert (config.train.lr, config.head.feature_lr, config.head.dropout) == (1e-3, 1e-4, 0.2)
    assert config.head.use_gcsa and config.head.masking and config.sampling.interval > 1
    head, _ = _head(data, GCSAConfig(**SMALL, feature_lr=1e-4))
    groups = head.parameter_groups()
    assert groups[0]["lr"] == 1e-4 and "lr" not in groups[1]
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(
        p.numel() for p in head.parameters())
    assert {id(p) for p in groups[1]["params"]} == {
        id(p) for p in (*head.fc_image.parameters(), *head.fc_audio.parameters())}
