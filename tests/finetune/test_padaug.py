"""The fine-tune's padding-aware augmentation: a crop made to look like a face at the frame's edge,
padded as ``faces`` pads (the border replicated), deterministic per seed, off by default."""

import random

import numpy as np
import pytest
from PIL import Image

from pipeline.data.faces.synthetic import photo
from pipeline.errors import PipelineError
from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.padaug import PadAugment


def _crop() -> Image.Image:
    """The real face as a crop, lifted off black (so that any black pixel is padding)."""
    face = np.asarray(photo().crop((170, 120, 350, 335)).resize((112, 112)))
    return Image.fromarray(np.clip(face, 30, 255))


def test_a_padded_crop_replicates_the_edge_line_on_one_side_only():
    image = _crop()
    original = np.asarray(image)
    for seed in range(8):
        random.seed(seed)
        out = np.asarray(PadAugment(prob=1.0, max_shift=0.3, mode="replicate")(image))
        changed = (out != original).any(-1)
        assert 0.01 < changed.mean() < 0.35, seed  # a strip, at most 30% deep (plus the tilt)
        assert (out.sum(-1) > 0).all()  # no black
        # the changed pixels touch exactly one side of the crop
        sides = [changed[:, 0].any(), changed[:, -1].any(), changed[0].any(), changed[-1].any()]
        assert sum(sides) >= 1 and not (sides[0] and sides[1]) and not (sides[2] and sides[3])
        # replicated: along the strip's depth, colours repeat (far fewer distinct colours than the face)
        assert len(np.unique(out[changed], axis=0)) < 0.5 * changed.sum()
        random.seed(seed)
        again = np.asarray(PadAugment(prob=1.0, max_shift=0.3, mode="replicate")(image))
        np.testing.assert_array_equal(out, again)  # same seed, same crop
    random.seed(0)
    black = np.asarray(PadAugment(prob=1.0, mode="black")(image))
    assert (black.sum(-1) == 0).any()
    assert PadAugment(prob=0.0)(image) is image


def test_the_fine_tune_option_is_off_by_default_and_checked():
    assert FinetuneConfig().augment.pad_prob == 0.0
    from pipeline.finetune.config import AugmentConfig

    with pytest.raises(PipelineError, match="augment.pad_prob 2"):
        FinetuneConfig(augment=AugmentConfig(pad_prob=2.0))


def test_train_transform_applies_it_when_asked():
    pytest.importorskip("timm")
    from pipeline.finetune.backbones import train_transform
    from pipeline.finetune.config import AugmentConfig

    data_config = {"input_size": (3, 112, 112), "interpolation": "bilinear",
                   "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    plain = FinetuneConfig(augment=AugmentConfig(hflip=0.0, color_jitter=0.0, scale=(1.0, 1.0),
                                                 ratio=(1.0, 1.0)))
    padded = FinetuneConfig(augment=AugmentConfig(hflip=0.0, color_jitter=0.0, scale=(1.0, 1.0),
                                                  ratio=(1.0, 1.0), pad_prob=1.0))
    image = _crop()
    outputs = []
    for config in (plain, padded):
        random.seed(3)
        outputs.append(train_transform(config, data_config, None)(image))
    assert outputs[0].shape == outputs[1].shape and not np.allclose(outputs[0], outputs[1])
