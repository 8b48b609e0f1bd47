"""Layer-wise learning-rate decay (``lr_decay``): each backbone parameter's share of ``lr`` by
its depth, as BEiT fine-tunes a ViT (Bao et al. 2021, "layer-wise learning rate decay"; the MAE
and DINOv2 fine-tuning recipes use it too).

With ``L`` blocks and decay ``d``, a parameter's learning rate is ``lr * d ** (L + 1 - i)``: the
embeddings (patch embedding, class/position tokens; ``i = 0``) get ``d ** (L + 1)``, block ``i``
(1-based) gets ``d ** (L + 1 - i)``, what comes after the last block (the final norm, a neck) gets
``lr``. The new classifier keeps ``head_lr``; weight decay is unchanged (``weight_decay`` on every
parameter, as without the option). ``lr_decay = 1`` builds the optimiser exactly as before.

What a block is, per layer order (:data:`LAYER_ORDERS`; a fine-tune backbone declares its own as
its class's ``layer_order``, :class:`pipeline.finetune.backbones.Backbone`):

* ``timm`` (backbones ``timm`` and ``swin_audio``, a timm Swin): the model's own
  ``group_matcher(coarse=False)``, read by timm's :func:`timm.models.group_parameters` (a ViT's
  ``blocks.N``, a Swin's blocks of every stage with its downsampling, a ResNet's ``layerS.B``).
  timm files the final norm with the last block (its "previous group" marker); BEiT gives it
  ``lr``, so do we: a parameter that the matcher files after the last block, or matches with no
  pattern, counts as "after the last block". A model without a ``group_matcher`` (or whose matcher
  puts everything in one group) is refused: there is no depth order to decay by.
* ``hf_audio`` (backbone ``hf_audio``): the encoder's ``encoder.layers.N`` (``L`` = its
  ``num_hidden_layers``); only the top ``train_layers`` of them train, so only their rates matter.
  Anything else of the encoder (the convolutional feature encoder, projection, positional
  convolution) counts as embeddings.
* none (backbones ``tdnn`` and ``iresnet``): refused (``finetune``'s config checks each
  backbone's declared ``layer_order``); no depth order is defined for them here.

Why not timm's ``param_groups_layer_decay``: it also takes weight decay off every 1-D parameter
(norms, biases) and leaves the learning rate to timm's schedulers (an ``lr_scale`` key), which
would change every fine-tune's numbers; it files the final norm with the last block (BEiT gives it
``lr``); and it knows nothing of ``hf_audio`` encoders. Its grouping of a timm model is the same
``group_matcher`` read through :func:`timm.models.group_parameters`, which we use.
"""

from __future__ import annotations

import re

from torch import nn

from pipeline.errors import PipelineError

LAYER_ORDERS = ("timm", "hf_audio")  # the depth orders lr_decay knows (the module docstring)
_PREVIOUS_GROUP = (99999,)  # timm's marker in a matcher: "file me with the group before"


def lr_scales(order: str | None, model_name: str, backbone: nn.Module,
              decay: float) -> dict[str, float]:
    """Each backbone parameter's name -> its share of ``lr`` (see the module docstring), by the
    backbone's declared layer ``order`` (one of :data:`LAYER_ORDERS`)."""
    if order == "hf_audio":
        return _hf_audio_scales(backbone, decay)
    if order != "timm":
        raise PipelineError(f"lr_decay {decay}: {model_name} has no layer order ({order!r}); "
                            f"choose a backbone of layer order {' or '.join(LAYER_ORDERS)}, or "
                            "lr_decay=1")
    return _timm_scales(model_name, backbone, decay)


def decayed_groups(backbone: nn.Module, scales: dict[str, float] | None,
                   lr: float) -> list[dict]:
    """The backbone's trainable parameters as optimiser groups: one group at ``lr`` without
    ``scales``; else one group per scale at ``lr * scale``, in increasing scale (depth) order."""
    if scales is None:
        return [{"params": [p for p in backbone.parameters() if p.requires_grad], "lr": lr}]
    by_scale: dict[float, list[nn.Parameter]] = {}
    for name, param in backbone.named_parameters():
        if param.requires_grad:
            by_scale.setdefault(scales[name], []).append(param)
    return [{"params": by_scale[s], "lr": lr * s} for s in sorted(by_scale)]


def _timm_scales(model_name: str, model: nn.Module, decay: float) -> dict[str, float]:
    from timm.models import group_parameters

    matcher = model.group_matcher(coarse=False) if hasattr(model, "group_matcher") else None
    layer = group_parameters(model, matcher, reverse=True) if matcher is not None else {}
    after = _after_last_block(model, matcher)
    blocks = max((i for name, i in layer.items() if name not in after), default=0)
    if blocks < 1:
        raise PipelineError(f"lr_decay {decay}: timm model {model_name!r} has no group_matcher "
                            "giving its layer order; use lr_decay=1")
    return {name: 1.0 if name in after else decay ** (blocks + 1 - layer[name])
            for name, _ in model.named_parameters()}


def _after_last_block(model: nn.Module, matcher: object) -> set[str]:
    """Names the matcher files after the last block: matched by no pattern (timm: the largest
    ordinal) or by a pattern marked "previous group" (the final norm). A matcher given as a
    function says neither: nothing counts as after."""
    if not isinstance(matcher, dict):
        return set()
    patterns = []  # (regex, suffix), in the order timm tries them
    for spec in matcher.values():
        if spec is None:
            continue
        for regex, suffix in (spec if isinstance(spec, (list, tuple)) else [(spec, None)]):
            patterns.append((re.compile(regex), suffix))
    after = set()
    for name, _ in model.named_parameters():
        suffix = next((s for regex, s in patterns if regex.match(name)), _PREVIOUS_GROUP)
        if tuple(suffix or ()) == _PREVIOUS_GROUP:
            after.add(name)
    return after


def _hf_audio_scales(encoder: nn.Module, decay: float) -> dict[str, float]:
    layers = int(encoder.model.config.num_hidden_layers)
    block = re.compile(r"^model\.encoder\.layers\.(\d+)\.")
    scales = {}
    for name, _ in encoder.named_parameters():
        found = block.match(name)
        scales[name] = decay ** (layers - int(found.group(1)) if found else layers + 1)
    return scales
