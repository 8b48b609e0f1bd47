"""Small members of the 2026 leaders' audio encoder families, written as ``hf_audio`` weights folders.

``fer-pipeline recipe sun2026|yu2026 --scale demo`` would otherwise extract a random wav2vec2-base
(95M parameters, 512-wide convolutions over every audio sample) on a 2-core CPU, and for yu2026's
WavLM a wav2vec2 at that: not "a smaller model of the same family". These are the same
architectures (transformers' own classes), narrower and shallower, with the convolutional feature
encoder kept (seven convolutions, the published kernels and strides: 50 Hz frames, a 400-sample
receptive field):

- ``fer_demo_wav2vec2``: wav2vec2-base's layout (group norm in the first convolution,
  post-norm transformer) 128 wide, 4 layers, 4 heads;
- ``fer_demo_wavlm``: WavLM-large's layout (layer norm in every convolution, conv bias, pre-norm
  transformer, gated relative position bias) 128 wide, 4 layers, 4 heads.

:func:`write_stand_in` builds one from its transformers config (no download), draws its weights
from a seed (:func:`~pipeline.features.extractors.seeding.seeded_build`) and publishes the folder
whole (``config.json``, ``model.safetensors``, ``preprocessor_config.json``), so that ``extract
-e hf_audio --weights hf_audio=DIR`` loads it through its ordinary loader. ``config.json`` names
the stand-in (:data:`STAND_IN_KEY`): the extractor records features of such a folder as random
weights (they are), and the fuse presets' random-weights check sees them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from pipeline import io
from pipeline.compat import ensure_torchvision
from pipeline.errors import PipelineError
from pipeline.features.extractors.seeding import seeded_build
from pipeline.features.weights_record import check_replaceable
from pipeline.suggest import did_you_mean

# config.json key naming the stand-in a folder holds (transformers keeps unknown config keys)
STAND_IN_KEY = "fer_stand_in"

_SMALL = dict(hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
              conv_dim=(128,) * 7, num_conv_pos_embeddings=64, num_conv_pos_embedding_groups=8)


def _wav2vec2(name: str) -> Any:
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config(**_SMALL, feat_extract_norm="group", do_stable_layer_norm=False,
                          **{STAND_IN_KEY: name})


def _wavlm(name: str) -> Any:
    from transformers import WavLMConfig

    return WavLMConfig(**_SMALL, feat_extract_norm="layer", do_stable_layer_norm=True,
                       conv_bias=True, **{STAND_IN_KEY: name})


# name -> (transformers config builder, the feature extractor's return_attention_mask)
DEMO_AUDIO_MODELS: dict[str, tuple[Callable[[str], Any], bool]] = {
    "fer_demo_wav2vec2": (_wav2vec2, False),  # as wav2vec2-base's preprocessor
    "fer_demo_wavlm": (_wavlm, True),  # as WavLM-large's
}


def stand_in_config(name: str) -> Any:
    """The transformers config of stand-in ``name``, or a one-line error naming the choices."""
    if name not in DEMO_AUDIO_MODELS:
        choices = ", ".join(DEMO_AUDIO_MODELS)
        raise PipelineError(f"unknown audio stand-in {name!r}; choose from {choices}"
                            f"{did_you_mean(name, DEMO_AUDIO_MODELS)}")
    ensure_torchvision()  # transformers imports it
    return DEMO_AUDIO_MODELS[name][0](name)


def check_out(out: Path) -> None:
    """Refuse an ``out`` that holds anything but a stand-in (it is replaced whole): another
    folder's files, or another model's weights (a fine-tune's, a published model's)."""
    check_replaceable(out)
    if out.is_dir() and any(out.iterdir()):
        config = out / "config.json"
        try:
            model_config = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            model_config = None
        if stand_in_of(model_config) is None:
            raise PipelineError(f"{out}: holds weights that are not a stand-in's (its config.json "
                                "names none); choose another --out (nothing was replaced)")


def write_stand_in(name: str, out: str | Path, seed: int = 0) -> Path:
    """Write stand-in ``name`` with weights drawn from ``seed`` into the folder ``out`` (published
    whole: a kill leaves the previous folder or none; an ``out`` holding anything but a stand-in
    is refused). The same name and seed give the same bytes."""
    from transformers import AutoModel

    config = stand_in_config(name)
    check_out(Path(out))
    model = seeded_build(lambda: AutoModel.from_config(config), name, seed)
    preprocessor = {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "feature_size": 1,
                    "sampling_rate": 16000, "padding_value": 0.0, "padding_side": "right",
                    "do_normalize": True, "return_attention_mask": DEMO_AUDIO_MODELS[name][1]}
    with io.staged_folder(out) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        (staging / "preprocessor_config.json").write_text(
            json.dumps(preprocessor, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return Path(out)


def stand_in_of(model_config: Any) -> str | None:
    """The stand-in a folder's ``config.json`` (parsed) says it holds; None for other models."""
    value = model_config.get(STAND_IN_KEY) if isinstance(model_config, dict) else None
    return value if isinstance(value, str) else None
