"""timm helpers shared by ``timm``, ``swin`` and ``swin_audio``: probe a model, build it with weights.

:func:`timm_probe` reads a model's eval data config and output shapes off a meta-device build (no
weights, no memory). :func:`build_timm` builds a headless (``num_classes=0``) model and
loads a weights file or folder in any layout :mod:`checkpoints` reads, after timm's own
per-model conversion (``checkpoint_filter_fn``: original Swin, DINOv2, ... names to timm's). The
checkpoint's classifier is dropped, as timm does for ``num_classes=0``; every other tensor must
match the model by name and shape, and a file that does not is refused in one line that names
the fix where it can be read off the file (a ResNet's depth from its block counts).
"""

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import functools  # noqa: E402
import sys  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import timm  # noqa: E402
import timm.data  # noqa: E402
import torch  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.extractors import demo_models  # noqa: E402,F401 (registers them)
from pipeline.features.extractors.checkpoints import block_counts, read_state_dict  # noqa: E402

# torchvision/timm ResNet block counts (and whether blocks are bottlenecks: conv3 exists).
RESNETS = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 6, 3), False): "resnet34",
           ((3, 4, 6, 3), True): "resnet50", ((3, 4, 23, 3), True): "resnet101",
           ((3, 8, 36, 3), True): "resnet152"}


@dataclass(frozen=True)
class TimmProbe:
    """What a timm model needs and gives, read off a meta-device build (no weights, no memory)."""

    data_config: dict  # timm's resolved eval data config: input_size, mean, std, crop_pct, ...
    num_features: int  # width of the pooled pre-logits output
    token_shape: tuple[int, ...]  # per-image shape of forward_features (NHWC for Swin: 7, 7, 768)
    # How forward_features lays out its map: "nhwc" (Swin), "nchw" (CNNs), "tokens" (ViT: [N, C]).
    layout: str
    map_shape: tuple[int, ...]  # the final feature map as [H, W, C]
    num_prefix_tokens: int = 0  # ViT class/register tokens before the patch tokens


@functools.lru_cache(maxsize=16)
def timm_probe(model_name: str) -> TimmProbe:
    """Data config and output shapes of a timm model, cached per process (do not mutate)."""
    if not timm.is_model(model_name):
        raise PipelineError(f"unknown timm model {model_name!r} (see timm.list_models())")
    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, num_classes=0)
        data_config = timm.data.resolve_model_data_config(model)
        tokens = model.forward_features(torch.empty(1, *data_config["input_size"]))
    shape, c = tuple(tokens.shape[1:]), int(model.num_features)
    prefix = 0
    if len(shape) == 3 and shape[-1] == c:
        layout, map_shape = "nhwc", shape
    elif len(shape) == 3 and shape[0] == c:
        layout, map_shape = "nchw", (shape[1], shape[2], c)
    elif len(shape) == 2 and hasattr(model, "patch_embed"):
        layout, prefix = "tokens", int(getattr(model, "num_prefix_tokens", 0))
        map_shape = (*model.patch_embed.grid_size, c)
    else:
        layout, map_shape = "unknown", ()
    return TimmProbe(data_config, c, shape, layout, map_shape, prefix)


def feature_map(tokens: torch.Tensor, probe: TimmProbe) -> torch.Tensor:
    """``forward_features`` output -> ``[B, H, W, C]`` (CNN maps transposed, ViT prefix dropped)."""
    if probe.layout == "nhwc":
        return tokens
    if probe.layout == "nchw":
        return tokens.permute(0, 2, 3, 1)
    if probe.layout == "tokens":
        return tokens[:, probe.num_prefix_tokens:].reshape(tokens.shape[0], *probe.map_shape)
    raise PipelineError(f"cannot read a spatial map off this model's features {probe.token_shape}")


def build_timm(model_name: str, weights: Path | None, trust_code: bool = False,
               option: str = "configs.timm.model") -> torch.nn.Module:
    """A headless (``num_classes=0``) timm model: from a weights file/folder, or timm's random
    initialisation (seeded per extractor when built through ``Extractor.build`` or
    :func:`~pipeline.features.extractors.seeding.seeded_build`)."""
    timm_probe(model_name)  # a clear error for an unknown name
    model = timm.create_model(model_name, pretrained=False, num_classes=0)
    if weights is not None:
        load_timm_weights(model, model_name, Path(weights), trust_code, option)
    return model


def load_timm_weights(model: torch.nn.Module, model_name: str, weights: Path,
                      trust_code: bool, option: str) -> None:
    """Load ``weights`` into ``model`` strictly (classifier aside) or raise one naming line."""
    state = read_state_dict(weights, trust_code)
    # The same conversion timm applies to its pretrained files (original Swin/DINOv2 names).
    convert = getattr(sys.modules[type(model).__module__], "checkpoint_filter_fn", None)
    if convert is not None:
        try:
            state = convert(state, model)
        except Exception:  # a file of another network can trip the converter: judged below
            pass
    expected = model.state_dict()
    classifier = model.pretrained_cfg.get("classifier") or "fc"
    heads = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    state = {k: v for k, v in state.items()
             if k in expected or not any(k.startswith(h + ".") for h in heads)}
    # Older files (the VGGFace2 ports) lack BatchNorm's counter; torch fills it in when loading.
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        guess = RESNETS.get((block_counts(state), any(".conv3." in k for k in state)))
        if guess and guess != model_name:
            raise PipelineError(
                f"{weights}: these are {guess} weights, not {model_name}: add --set {option}={guess}")
        parts = [f"{label} {len(keys)} (e.g. {keys[0]})"
                 for label, keys in (("missing", missing), ("unexpected", unexpected),
                                     ("wrong shape", wrong)) if keys]
        raise PipelineError(f"{weights}: not {model_name} weights: {'; '.join(parts)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, strict=True)
