"""``xattn`` and ``tcn``: safe cross-attention, sliding-window soft voting computed directly,
receptive field, padding independence; ``sequence`` with 300-frame windows."""

import numpy as np
import pytest
import torch

from pipeline.features.store import FeatureStore
from pipeline.fusion.data import check_inputs, load_table
from pipeline.fusion.heads import registry
from pipeline.fusion.heads.windowed import voting_weights
from pipeline.fusion.heads.xattn import safe_attention
from pipeline.training.losses import LossConfig
from pipeline.training.sampling import SamplingConfig

from .synthetic import make_dataset

SMALL = {"xattn": {"dim": 16, "heads": 2, "ff": 32, "length": 12, "eval_stride": 5},
         "tcn": {"dim": 16, "levels": 2, "length": 12, "eval_stride": 5},
         "sequence": {"dim": 16, "heads": 2, "ff": 32}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("window"), splits={"train": 2, "val": 1},
                        frames=30, faceless=0.2)


def _head(name, data, clips=None, **changes):
    cls = registry()[name]
    config = cls.Config(**{**SMALL[name], "dropout": 0.0, **changes})
    request = cls.request(config, SamplingConfig())
    store = FeatureStore(data.store)
    clips = data.clips if clips is None else clips
    dims = check_inputs(store, clips, request)
    torch.manual_seed(0)
    head = cls(config, dims).eval()
    return head, load_table(store, clips, request, dims, train=False)


def test_safe_attention_is_zero_without_keys_and_plain_attention_with_them():
    torch.manual_seed(0)
    attention = torch.nn.MultiheadAttention(8, 2, batch_first=True).eval()
    q, k = torch.randn(3, 4, 8), torch.randn(3, 5, 8)
    mask = torch.tensor([[True] * 5, [False] * 5, [True, False, True, False, False]])
    out = safe_attention(attention, q, k, mask)
    assert torch.isfinite(out).all() and float(out[1].detach().abs().max()) == 0.0
    plain, _ = attention(q[2:], k[2:], k[2:], key_padding_mask=~mask[2:])
    torch.testing.assert_close(out[2:], plain)


def test_xattn_all_faces_masked_is_the_audio_only_path(data):
    head, table = _head("xattn", data)
    starts = head.starts(table, 5, None)
    inputs, _, _ = head.batch(table, starts, None)
    inputs["image_mask"] = torch.zeros_like(inputs["image_mask"])
    inputs["image"] = torch.full_like(inputs["image"], float("nan"))  # nothing may leak
    with torch.no_grad():
        out = head(inputs)["main"]
        audio_only = head.audio_only(inputs)["main"]
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, audio_only, rtol=0, atol=0)
    # and with both modalities present the faces do change the output
    full, _, _ = head.batch(table, starts, None)
    with torch.no_grad():
        assert not torch.allclose(head(full)["main"], out)


def test_xattn_all_audio_masked_stays_finite_and_trains(data):
    head, table = _head("xattn", data)
    head.train()
    inputs, targets, _ = head.batch(table, head.starts(table, 5, None), None)
    inputs["audio_mask"] = torch.zeros_like(inputs["audio_mask"])
    inputs["image_mask"][0] = False  # one window with nothing at all
    logits = head(inputs)
    assert torch.isfinite(logits["main"]).all()
    head.loss(logits, targets, None, LossConfig()).backward()
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)


@pytest.mark.parametrize("name", ["xattn", "tcn"])
@pytest.mark.parametrize("voting", ["uniform", "triangle"])
def test_soft_voting_against_a_direct_computation(data, name, voting):
    head, table = _head(name, data, voting=voting)
    probs = head.predict(table, batch_size=24)["main"]
    weight = voting_weights(12, voting)
    for i in range(len(table.clip_ids)):
        rows = table.clip_rows(i)
        sums, hits = np.zeros((30, 8)), np.zeros(30)
        for start in (0, 5, 10, 15, 18):  # every 5 frames, the last ending at the clip's end
            inputs, _, _ = head.batch(table, np.array([rows.start + start]), None)
            with torch.no_grad():
                p = torch.softmax(head(inputs)["main"][0].double(), -1).numpy()
            sums[start:start + 12] += p * weight[:, None]
            hits[start:start + 12] += weight
        np.testing.assert_allclose(probs[rows], sums / hits[:, None], atol=1e-5)
    if voting == "triangle":
        assert voting_weights(5, voting).tolist() == [1, 2, 3, 2, 1]


def test_tcn_receptive_field(data):
    head, table = _head("tcn", data, length=30, eval_stride=30, levels=2, kernel=3)
    assert head.receptive_field == 1 + 2 * 2 * 3  # 13 frames: 6 either side
    inputs, _, _ = head.batch(table, np.array([0]), None)
    with torch.no_grad():
        base = head(inputs)["main"][0, 15]
        far = {k: v.clone() for k, v in inputs.items()}
        far["image"][0, 22:] += 5.0  # 7 frames away and beyond: outside the field
        assert torch.equal(head(far)["main"][0, 15], base)
        near = {k: v.clone() for k, v in inputs.items()}
        near["image"][0, 21] += 5.0  # 6 frames away: inside
        assert not torch.equal(head(near)["main"][0, 15], base)


@pytest.mark.parametrize("name", ["xattn", "tcn"])
def test_a_clip_predicts_the_same_alone_or_beside_a_longer_one(tmp_path, name):
    short = make_dataset(tmp_path / "a", splits={"val": 1}, frames=20, seed=3)
    longer = make_dataset(tmp_path / "b", splits={"train": 1}, frames=40, seed=4)
    head, alone = _head(name, short, length=32, eval_stride=16)
    store = FeatureStore(short.store, "a")
    other = FeatureStore(longer.store)
    clip = longer.clips[0]
    store.ensure_clip(clip.clip_id, clip.n_frames, 10.0, {"has_audio": True})
    for array in ("valid", "swin", "tdnn_w32", "tdnn_w48", "tdnn_w64"):
        store.write(clip.clip_id, array, other.read(clip.clip_id, array), cache_key="test",
                    rate=10.0)
    request = head.request(head.config, SamplingConfig())
    dims = check_inputs(store, short.clips + [clip], request)
    together = load_table(store, short.clips + [clip], request, dims, train=False)
    assert head.window_length(alone) == 20 and head.window_length(together) == 32
    np.testing.assert_allclose(head.predict(together, 64)["main"][:20],
                               head.predict(alone, 64)["main"], atol=1e-5)


def test_sequence_and_tcn_take_300_frame_windows(tmp_path):
    data = make_dataset(tmp_path, splits={"train": 1, "val": 1}, frames=420)
    for name in ("sequence", "tcn"):
        head, table = _head(name, data, length=300, train_stride=100, eval_stride=150)
        head.train()
        counts = head.trainable(table).astype(np.int64)
        examples = head.examples(table, counts, np.random.default_rng(0))
        inputs, targets, weights = head.batch(table, examples[:2], counts)
        assert inputs["image"].shape[1] == 300
        head.loss(head(inputs), targets, weights, LossConfig()).backward()
        head.eval()
        probs = head.predict(table, batch_size=600)["main"]  # two windows per forward pass
        assert probs.shape == (840, 8) and np.isfinite(probs).all()
