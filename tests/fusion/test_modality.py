"""Modality dropout: drawn at the stated rate, whole modalities only, never at inference, in every
head that fuses two modalities."""

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.data import check_inputs, load_table
from pipeline.fusion.heads import registry
from pipeline.fusion.modality import modality_keep
from pipeline.training.sampling import SamplingConfig

from .synthetic import make_dataset

# The heads that fuse two modalities, small, without ordinary dropout (so that a training-mode
# forward pass differs from another only by the modality dropout).
TWO_MODALITY = {
    "mfm": {"dim": 16, "heads": 2, "dropout": 0.0},
    "sequence": {"dim": 16, "heads": 2, "ff": 32, "length": 12, "eval_stride": 6, "dropout": 0.0},
    "gcsa": {"width": 8, "audio_width": 4, "window": 8, "dropout": 0.0, "masking": False},
    "gated": {"dim": 16, "dropout": 0.0},
    "xattn": {"dim": 16, "heads": 2, "ff": 32, "length": 12, "eval_stride": 6, "dropout": 0.0},
    "tcn": {"dim": 16, "levels": 3, "length": 12, "eval_stride": 6, "dropout": 0.0},
}


def _mask_image_by_hand(name, inputs):
    """The head's own missing-face path, applied to every sample."""
    out = dict(inputs)
    if name in ("mfm", "xattn"):
        out["image_mask"] = torch.zeros_like(inputs["image_mask"])
    elif name in ("sequence", "tcn"):
        out["image"] = torch.zeros_like(inputs["image"])
        out["flags"] = inputs["flags"] * torch.tensor([0.0, 1.0])
    elif name == "gcsa":
        out["image"] = torch.zeros_like(inputs["image"])
    elif name == "gated":
        present = inputs["present"].clone()
        present[:, 0] = False
        out["present"] = present
    return out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("modality"), splits={"train": 2, "val": 1},
                        frames=30, token_maps=True, logmel=True)


def _head(name, data, **changes):
    cls = registry()[name]
    config = cls.Config(**{**TWO_MODALITY[name], **changes})
    request = cls.request(config, SamplingConfig())
    store = FeatureStore(data.store)
    dims = check_inputs(store, data.clips, request)
    torch.manual_seed(0)
    return cls(config, dims), load_table(store, data.clips, request, dims, train=True)


def test_draws_at_the_stated_rate_never_both_never_at_inference():
    torch.manual_seed(0)
    n = 200_000
    keep_image, keep_audio = modality_keep(n, 0.3, "either", training=True)
    assert not (~keep_image & ~keep_audio).any()
    assert abs(float((~keep_image).float().mean()) - 0.15) < 0.005
    assert abs(float((~keep_audio).float().mean()) - 0.15) < 0.005
    keep_image, keep_audio = modality_keep(n, 0.3, "image", training=True)
    assert abs(float((~keep_image).float().mean()) - 0.3) < 0.005 and keep_audio.all()
    keep_image, keep_audio = modality_keep(n, 0.9, "either", training=False)
    assert keep_image.all() and keep_audio.all()


@pytest.mark.parametrize("name", sorted(TWO_MODALITY))
def test_every_two_modality_head_has_the_option(name, data):
    assert name in registry()
    fields = registry()[name].Config.__dataclass_fields__
    assert {"modality_dropout", "modality_dropout_which"} <= set(fields)
    with pytest.raises(PipelineError, match="modality_dropout"):
        _head(name, data, modality_dropout=1.0)


@pytest.mark.parametrize("name", sorted(TWO_MODALITY))
def test_inference_ignores_the_option(name, data):
    head, table = _head(name, data, modality_dropout=0.9)
    head.eval()
    inputs, _, _ = head.batch(table, head.examples(table, np.ones(table.n_rows, np.int64),
                                                   np.random.default_rng(0))[:6], None)
    with torch.no_grad():
        with_option = {k: v.clone() for k, v in head(inputs).items()}
        head.config.modality_dropout = 0.0
        without = head(inputs)
    for key, value in without.items():
        assert torch.equal(with_option[key], value), key
    probs = head.predict(table, 16)
    head.config.modality_dropout = 0.9
    again = head.predict(table, 16)
    for key, value in probs.items():
        np.testing.assert_array_equal(again[key], value)


@pytest.mark.parametrize("name", sorted(TWO_MODALITY))
def test_training_masks_the_whole_modality(name, data):
    head, table = _head(name, data, modality_dropout=0.999999, modality_dropout_which="image")
    head.train()
    counts = np.ones(table.n_rows, np.int64)
    examples = head.examples(table, counts, np.random.default_rng(0))[:6]
    inputs, _, _ = head.batch(table, examples, counts)
    torch.manual_seed(1)
    dropped = head(inputs)
    head.config.modality_dropout = 0.0
    torch.manual_seed(1)
    by_hand = head(_mask_image_by_hand(name, inputs))
    torch.manual_seed(1)
    untouched = head(inputs)
    compared = {"mfm": "fusion", "gcsa": "image"}.get(name, "main")
    torch.testing.assert_close(dropped[compared], by_hand[compared])
    assert not torch.allclose(dropped[compared], untouched[compared])


def test_gated_drops_faces_at_the_rate(data):
    head, table = _head("gated", data, modality_dropout=0.5, modality_dropout_which="image")
    head.train()
    rows = np.tile(np.flatnonzero(table.valid), 200)
    inputs, _, _ = head.batch(table, rows, np.ones(table.n_rows, np.int64))
    torch.manual_seed(0)
    g, _ = head.gates(inputs)
    share = float((g[:, 0] == 0).float().mean())
    assert 0.47 < share < 0.53
    assert bool((g[:, 1:] > 0).all())  # audio never dropped with which = "image"
