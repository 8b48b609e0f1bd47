"""Startup hook for the project's venv: lets a user's own ``import timm`` / ``import torchvision``
work on a CPU-only torch (see :mod:`pipeline.compat`).

``python -m pipeline.compat repair`` (``make setup``) copies this file into the venv's
site-packages as ``fer_pipeline_compat_hook.py`` beside ``fer_pipeline_compat.pth``, whose one
line imports it at every interpreter start. Importing it only puts a finder at the front of
``sys.meta_path`` (no torch import: interpreter start stays cheap). The first time anything
imports ``torchvision``, the finder removes itself, runs
:func:`pipeline.compat.ensure_torchvision` and lets the normal import go on. If ``pipeline`` is
not importable (the project was uninstalled), it does nothing. It must stay self-contained: it
runs before the project's packages are on the path.
"""

import sys


class TorchvisionShim:
    """A meta-path finder that finds nothing; it only runs the shim before torchvision loads."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name != "torchvision":
            return None
        if TorchvisionShim in sys.meta_path:
            sys.meta_path.remove(TorchvisionShim)  # once; also: ensure_torchvision looks it up
        try:
            from pipeline.compat import ensure_torchvision
        except ImportError:
            return None
        ensure_torchvision()
        return None  # the regular finders import torchvision


if TorchvisionShim not in sys.meta_path:
    sys.meta_path.insert(0, TorchvisionShim)
