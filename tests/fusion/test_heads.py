"""Every registered head's shape contract on random inputs, the MFM's multi-token co-attention,
the purity masks, and the sequence head's averaging of overlapping windows."""

import numpy as np
import pytest
import torch

from pipeline.features.store import FeatureStore
from pipeline.fusion.data import check_inputs, load_table
from pipeline.fusion.heads import registry
from pipeline.fusion.heads.mfm import ModalFusionHead
from pipeline.training.losses import LossConfig
from pipeline.training.sampling import SamplingConfig

from .synthetic import make_dataset

SMALL = {"mfm": {"dim": 16, "heads": 2},
         "sequence": {"dim": 16, "heads": 2, "ff": 32, "length": 12, "eval_stride": 6},
         "gcsa": {"width": 8, "audio_width": 4, "window": 8},
         "gated": {"dim": 16},
         "xattn": {"dim": 16, "heads": 2, "ff": 32, "length": 12, "eval_stride": 6},
         "tcn": {"dim": 16, "levels": 3, "length": 12, "eval_stride": 6}}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("heads"), splits={"train": 2, "val": 1},
                        frames=30, token_maps=True, logmel=True)


def _head(name, data, **changes):
    cls = registry()[name]
    config = cls.Config(**{**SMALL.get(name, {}), **changes})
    request = cls.request(config, SamplingConfig(purity=True))
    store = FeatureStore(data.store)
    dims = check_inputs(store, data.clips, request)
    torch.manual_seed(0)
    head = cls(config, dims)
    return head, load_table(store, data.clips, request, dims, train=True)


def test_registry_holds_the_five_heads():
    assert {"image", "audio", "mfm", "sequence", "proportional", "gated", "xattn", "tcn"} \
        <= set(registry())
    for name, cls in registry().items():
        assert cls.name == name and cls.primary in cls.outputs


@pytest.mark.parametrize("name", sorted(registry()))
def test_shapes_and_probabilities(name, data):
    head, table = _head(name, data)
    counts = head.trainable(table).astype(np.int64)
    examples = head.examples(table, counts, np.random.default_rng(0))
    assert examples.size > 0
    inputs, targets, weights = head.batch(table, examples[:5], counts)
    logits = head(inputs)
    assert set(logits) == set(head.model_outputs or head.outputs)
    for value in logits.values():
        assert value.shape == (*targets.shape, 8)
    loss = head.loss(logits, targets, weights, LossConfig())
    loss.backward()
    head.eval()
    probs = head.derive(head.predict(table, batch_size=16))
    assert set(probs) == set(head.outputs)
    for value in probs.values():
        assert value.shape == (table.n_rows, 8) and value.dtype == np.float32
        np.testing.assert_allclose(value.sum(axis=1), 1.0, atol=1e-5)


def test_mfm_attends_over_several_tokens(data):
    head, table = _head("mfm", data, context=3, stride=1)
    head.eval()
    rows = np.arange(5, 15)
    inputs, _, _ = head.batch(table, rows, None)
    assert inputs["image_tokens"].shape[1] == 7 and inputs["audio_tokens"].shape[1] == 3
    _, _, w_ia, w_ai = head.co_attention(inputs, need_weights=True)
    assert w_ia.shape == (10, 3, 1 + 7) and w_ai.shape == (10, 7, 1 + 3)
    # a real softmax over several keys: no row puts all its weight on one key
    assert w_ia.max() < 0.99 and w_ai.max() < 0.99
    np.testing.assert_allclose(w_ia.sum(-1).detach(), 1.0, atol=1e-5)
    # masked tokens (no face, outside the clip) get no weight; the null token is always there
    inputs["image_mask"][:, :4] = False
    inputs["audio_token_mask"][:] = False
    _, _, w_ia, w_ai = head.co_attention(inputs, need_weights=True)
    assert float(w_ia[:, :, 1:5].abs().max().detach()) == 0.0
    np.testing.assert_allclose(w_ai[:, :, 0].detach(), 1.0, atol=1e-6)
    assert torch.isfinite(head(inputs)["fusion"]).all()


def test_mfm_uses_spatial_tokens_of_token_maps(data):
    head, table = _head("mfm", data, image="swin_tokens")
    inputs, _, _ = head.batch(table, np.arange(4), None)
    assert inputs["image_tokens"].shape == (4, 4, 16)  # the 2 x 2 map of each frame
    assert isinstance(head, ModalFusionHead) and head.spatial


def test_purity_masks_audio_tokens_in_training_only(data):
    head, table = _head("mfm", data)
    rows = np.flatnonzero(~table.window_ok.all(axis=1) & (table.labels != -1))[:5]
    assert rows.size
    trained, _, _ = head.batch(table, rows, np.ones(table.n_rows, np.int64))
    inferred, _, _ = head.batch(table, rows, None)
    assert (trained["audio_mask"].numpy() == table.window_ok[rows]).all()
    assert (trained["audio_token_mask"].numpy() == table.window_ok[rows]).all()
    assert inferred["audio_mask"].all()


def test_sequence_averages_overlapping_windows(data):
    head, table = _head("sequence", data, length=12, eval_stride=5)
    head.eval()
    probs = head.predict(table, batch_size=24)["main"]
    rows = table.clip_rows(0)
    # by hand: windows at 0, 5, 10, 15, 18 of the 30-frame clip, probabilities averaged
    sums, hits = np.zeros((30, 8)), np.zeros(30)
    for start in (0, 5, 10, 15, 18):
        inputs, _, _ = head.batch(table, np.array([rows.start + start]), None)
        with torch.no_grad():
            p = torch.softmax(head(inputs)["main"][0], -1).numpy()
        sums[start:start + 12] += p
        hits[start:start + 12] += 1
    np.testing.assert_allclose(probs[rows], sums / hits[:, None], atol=1e-5)
