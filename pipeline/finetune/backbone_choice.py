"""The fine-tune backbones by name: the registry ``FinetuneConfig.backbone`` is checked against,
and :func:`backbone_for`, which builds the chosen one.

:data:`BACKBONES` is a :class:`pipeline.registry.Registry` (the helper every plug-in kind
shares): it finds the ``@register``-decorated :class:`~pipeline.finetune.backbones.Backbone`
subclasses of this package's modules by reading their source (``timm`` and ``tdnn`` in
:mod:`~pipeline.finetune.backbones`, ``iresnet`` in :mod:`~pipeline.finetune.iresnet`,
``swin_audio`` and ``hf_audio`` in :mod:`~pipeline.finetune.audio`) and those that installed
packages name in entry points of group ``fer_pipeline.backbones``. So adding a backbone is one
module with its registered class (docs/plugins.md). This module imports none of them: the
config can check a name without loading torch models, and the imports stay one way.
"""

from __future__ import annotations

from typing import Any

from pipeline.registry import Registry

__all__ = ["BACKBONES", "backbone_for", "register"]

# In the order `finetune --describe` lists them (each class's `order`, then its name).
BACKBONES: Registry[type] = Registry(
    "backbone", "pipeline.finetune", "fer_pipeline.backbones",
    order=lambda item: (getattr(item[1], "order", 100), item[0]))
register = BACKBONES.register  # class decorator: make a backbone available by its ``name``


def backbone_for(config: Any) -> Any:
    """The :class:`~pipeline.finetune.backbones.Backbone` of a
    :class:`~pipeline.finetune.config.FinetuneConfig`'s ``backbone`` (both typed ``Any``: they
    import this module)."""
    return BACKBONES.get(config.backbone)(config)
