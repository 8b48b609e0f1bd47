"""The four papers' presets as written: Yu et al.'s eq. 6 on the fused prediction and key-frame
weights, Jin et al.'s 7 classes, Kim et al.'s Y_I on every face and ViT MLP ratio. References are
the papers' formulas computed directly in numpy and scikit-learn's F1."""

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.data import FeatureRequest, load_table, read_clip
from pipeline.fusion.heads.gcsa import GCSAConfig, GCSAHead
from pipeline.fusion.heads.mfm import AUDIO_TRAINS, MFMConfig, ModalFusionHead
from pipeline.fusion.heads.proportional import (
    ProportionalConfig,
    ProportionalHead,
    keyframe_weights,
)
from pipeline.training.losses import LossConfig
from pipeline.fusion.train import train
from pipeline.runs.predictions import Predictions, prediction_path

from .synthetic import make_dataset

OTHER = 7
# The paper's quadrants as this project places the classes (LossConfig's defaults), 0 = none.
QUADRANT = {0: 4, 1: 2, 2: 2, 3: 2, 4: 1, 5: 3, 6: 1, 7: 0}
MU = {(1, 2): 0.5, (1, 3): 1.0, (1, 4): 0.5, (2, 3): 0.5, (2, 4): 1.0, (3, 4): 0.5}


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _eq6(audio_logits, image_logits, targets, m, n):
    """L_cf of Yu et al. eq. 6 on P = (m Pa + n Pv) / (m + n), with mu_{q(y) q(argmax P)}."""
    p = (m * _softmax(audio_logits) + n * _softmax(image_logits)) / (m + n)
    total = 0.0
    for i, y in enumerate(targets):
        a, b = sorted((QUADRANT[int(y)], QUADRANT[int(p[i].argmax())]))
        mu = MU.get((a, b), 0.0) if a and b and a != b else 0.0
        total += (1 + mu) * -np.log(p[i, y])
    return total / len(targets)


def _proportional(m, n):
    head = ProportionalHead(ProportionalConfig(dropout=0.0), {"swin": (4,), "tdnn_w32": (4,),
                                                              "tdnn_w48": (4,), "tdnn_w64": (4,)})
    head.m.fill_(m)
    head.n.fill_(n)
    return head


@pytest.mark.parametrize("m, n", [(1, 1), (2, 5), (5, 1)])
def test_fused_loss_is_eq6_on_the_fused_prediction(m, n):
    rng = np.random.default_rng(m * 10 + n)
    audio, image = rng.normal(size=(64, 8)) * 2, rng.normal(size=(64, 8)) * 2
    targets = rng.integers(0, 8, 64)
    head = _proportional(m, n)
    logits = {"audio": torch.tensor(audio, dtype=torch.float32),
              "image": torch.tensor(image, dtype=torch.float32)}
    config = LossConfig(kind="coarse_fine", on="fused")
    loss = head.loss(logits, torch.from_numpy(targets), None, config)
    assert float(loss) == pytest.approx(_eq6(audio, image, targets, m, n), rel=1e-5)
    branches = head.loss(logits, torch.from_numpy(targets), None,
                         LossConfig(kind="coarse_fine", on="branches"))
    assert float(branches) != pytest.approx(float(loss), rel=1e-3)  # P never entered that one


def test_fused_loss_reaches_both_branches_through_p():
    head = _proportional(3, 2)
    features = torch.randn(16, 4)
    audio = torch.randn(16, 3, 4)
    inputs = {"image": features, "audio": audio, "audio_mask": torch.ones(16, 3, dtype=torch.bool)}
    loss = head.loss(head(inputs), torch.randint(0, 8, (16,)), None,
                     LossConfig(kind="coarse_fine", on="fused"))
    loss.backward()
    assert head.y_image.net[-1].weight.grad.abs().sum() > 0
    assert head.y_audio.net[-1].weight.grad.abs().sum() > 0


def test_fused_loss_is_refused_for_heads_without_the_rule(tmp_path):
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="loss.on = fused: method 'image'"):
        build_config("image", tmp_path / "s.zarr", tmp_path, sets=["loss.on=fused"])


def test_keyframe_weights_follow_each_modalitys_macro_f1():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 500)
    image = np.eye(8)[np.where(rng.random(500) < 0.7, labels, rng.integers(0, 8, 500))]
    audio = np.eye(8)[np.where(rng.random(500) < 0.3, labels, rng.integers(0, 8, 500))]
    labels[:20] = -1  # unlabelled frames count for nothing
    keep = labels >= 0
    f1 = [f1_score(labels[keep], p[keep].argmax(1), labels=range(8), average="macro")
          for p in (audio, image)]
    m, n = keyframe_weights(audio, image, labels, 5)
    assert n == 5 and m == max(1, int(np.floor(5 * f1[0] / f1[1] + 0.5))) and 1 <= m < 5
    assert keyframe_weights(image, audio, labels, 5) == (n, m)
    assert keyframe_weights(audio * 0 + np.eye(8)[0], audio * 0 + np.eye(8)[0],
                            np.full(500, 3), 5) == (1, 1)  # neither scores: equal weights


def test_the_other_reading_of_the_learning_rate_sentence():
    dims = {"swin_tokens": (2, 2, 8), "logmel": (16,)}
    classifiers = GCSAHead(GCSAConfig(width=8, audio_width=4, feature_lr=1e-4), dims)
    fast = {id(p) for p in classifiers.parameter_groups()[1]["params"]}
    assert fast == {id(p) for p in [*classifiers.fc_image.parameters(),
                                    *classifiers.fc_audio.parameters()]}
    weights = GCSAHead(GCSAConfig(width=8, audio_width=4, feature_lr=1e-4,
                                  fast_params="weights"), dims)
    slow, fast = weights.parameter_groups()
    assert slow["lr"] == 1e-4 and "lr" not in fast
    named = dict(weights.named_parameters())
    fast_names = {k for k, p in named.items() if any(p is q for q in fast["params"])}
    assert fast_names and all(k.endswith("weight") for k in fast_names)
    assert "fc_image.1.weight" in fast_names and "fc_image.1.bias" not in fast_names
    conv = [k for k, m in weights.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(f"{k}.weight" in fast_names for k in conv)
    assert not any(k.endswith("bias") or "norm" in k for k in fast_names)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("papers"), splits={"train": 4, "val": 2},
                        frames=60, noise=0.5, seed=2)  # Other in train and val


def test_yu2025_fuses_with_the_keyframe_pair_it_trained_with(data, tmp_path):
    config = build_config("proportional", data.store, data.manifests, preset="yu2025",
                          sets=["train.epochs=2", "train.lr=0.01", "train.batch_size=32",
                                "head.audio=[\"tdnn_w32\"]"])
    assert config.loss.on == "fused" and config.head.weights == "keyframe"
    result = train(config, tmp_path / "yu", data.clips, FeatureStore(data.store))
    grid = result.metrics.grid
    assert grid["rule"] == "keyframe" and grid["fitted_on"] == "train-dev"
    m, n = grid["best"]
    preds = {name: dict(Predictions(prediction_path(result.run_dir, "val", name)))
             for name in ("fusion", "image", "audio")}
    for clip_id, fused in preds["fusion"].items():
        expected = (m * preds["audio"][clip_id] + n * preds["image"][clip_id]) / (m + n)
        np.testing.assert_allclose(fused, expected, atol=1e-6)


def test_seven_classes_leave_other_unlabelled_and_never_predict_it(data, tmp_path):
    store = FeatureStore(data.store)
    clip = next(c for c in data.clips if c.split == "train" and (c.labels == OTHER).any())
    seven = read_clip(store, clip, FeatureRequest(arrays=(), classes=7), {}, train=True)
    eight = read_clip(store, clip, FeatureRequest(arrays=()), {}, train=True)
    assert (eight.labels == OTHER).any() and not (seven.labels == OTHER).any()
    np.testing.assert_array_equal(seven.labels, np.where(eight.labels == OTHER, -1, eight.labels))

    config = build_config("image", data.store, data.manifests,
                          sets=["task.classes=7", "train.epochs=2", "train.batch_size=32"])
    result = train(config, tmp_path / "seven", data.clips, store)
    val = [c for c in data.clips if c.split == "val"]
    probs = dict(Predictions(prediction_path(result.run_dir, "val", "main")))
    assert all(float(probs[c.clip_id][:, OTHER].max()) == 0.0 for c in val)
    labels = np.concatenate([c.labels for c in val])
    predicted = np.concatenate([probs[c.clip_id].argmax(1) for c in val])
    keep = (labels >= 0) & (labels != OTHER)  # the 2021 track scored the 7 basic classes
    expected = f1_score(labels[keep], predicted[keep], labels=range(7), average="macro")
    assert result.metrics.extra["classes"] == 7
    assert result.metrics.extra["val_macro_f1_7class"]["main"] == pytest.approx(expected, abs=1e-9)


def test_jin2021_trains_seven_classes_by_default_and_eight_on_request(data):
    assert build_config("sequence", data.store, data.manifests, preset="jin2021",
                        allow_random_weights=True).task.classes == 7
    assert build_config("sequence", data.store, data.manifests, preset="jin2021",
                        allow_random_weights=True, sets=["task.classes=8"]).task.classes == 8


def _mfm(every_face: bool, mlp_ratio: float = 2.0) -> ModalFusionHead:
    torch.manual_seed(0)
    config = MFMConfig(image="img", audio=("a32", "a48"), dim=8, heads=2, context=1,
                       mlp_ratio=mlp_ratio, image_every_face=every_face, dropout=0.0)
    return ModalFusionHead(config, {"img": (6,), "a32": (4,), "a48": (4,)})


def test_kim2023_mfm_uses_vits_mlp_ratio(data):
    config = build_config("mfm", data.store, data.manifests, preset="kim2023")
    assert config.head.mlp_ratio == 4.0 and config.head.image_every_face
    head = _mfm(True, config.head.mlp_ratio)
    assert head.encoder.layers[0].linear1.out_features == 4 * 8


def test_y_i_trains_on_face_frames_without_a_pure_window(data):
    """A frame without a pure audio window trains Y_I only: Y_T's and Y_A's layers get no
    gradient from it; with the flag off it does not train at all."""
    store = FeatureStore(data.store)
    clip = next(c for c in data.clips if c.split == "train")
    request = FeatureRequest(arrays=("swin", "tdnn_w32", "tdnn_w48"),
                             audio=("tdnn_w32", "tdnn_w48"),
                             purity=((32, 48), (0.99, 0.99), "window"))
    dims = {"swin": (16,), "tdnn_w32": (8,), "tdnn_w48": (8,)}
    table = load_table(store, [clip], request, dims, train=True)
    head = ModalFusionHead(MFMConfig(audio=("tdnn_w32", "tdnn_w48"), dim=8, heads=2, context=1,
                                     image_every_face=True, dropout=0.0),
                           dims)
    off = ModalFusionHead(MFMConfig(audio=("tdnn_w32", "tdnn_w48"), dim=8, heads=2, context=1),
                          dims)
    face = (table.labels >= 0) & table.valid
    impure = face & ~table.window_ok.any(axis=1)
    assert impure.any()
    np.testing.assert_array_equal(head.trainable(table), face)
    assert not off.trainable(table)[impure].any()

    rows = np.flatnonzero(impure)
    inputs, targets, weights = head.batch(table, rows, np.ones(table.n_rows, np.int64))
    assert not inputs[AUDIO_TRAINS].any()
    head.train()
    head.loss(head(inputs), targets, weights, LossConfig()).backward()
    assert head.y_image.net[-1].weight.grad.abs().sum() > 0
    assert head.y_fusion.weight.grad is None or not head.y_fusion.weight.grad.any()
    assert head.y_audio.net[-1].weight.grad is None or not head.y_audio.net[-1].weight.grad.any()
