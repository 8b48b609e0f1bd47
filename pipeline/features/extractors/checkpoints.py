"""Read a state dict from any layout published backbones ship in, as ``{name: float tensor}``.

Layouts :func:`read_state_dict` accepts, found by looking at the file, not its name alone:

* a ``.safetensors`` file;
* a ``torch.save`` file (``.pth``/``.pt``/``.bin``/``.ckpt``) of a state dict, read with
  ``weights_only=True`` (no code runs);
* a checkpoint dict holding the state dict under ``state_dict`` or ``model`` (training scripts);
* a pickled dict of numpy arrays (the VGGFace2 ResNet ports ship ``*.pkl`` files like this),
  read with an unpickler that admits only numpy arrays and dicts;
* a folder in the HuggingFace layout (``model.safetensors`` or ``pytorch_model.bin``), including a
  snapshot folder of the HF cache (``snapshots/<revision>/``) or the cache's ``models--org--name``
  folder itself (its ``refs/main`` snapshot);
* a whole pickled ``nn.Module`` (some FER model zoos ship ``torch.save(model)``): reading it runs
  arbitrary code from the file, so it is refused unless the caller passes ``trust_code=True``
  (stage one's ``trust_code`` option, docs/trust.md): only for files from a source you trust.

A ``module.`` prefix on every name (DataParallel/DDP) is removed. Every failure is one
:class:`PipelineError` line naming the file.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.errors import PipelineError

FOLDER_FILES = ("model.safetensors", "pytorch_model.bin")  # the HF layout, in order of preference
WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, scalars and dicts: what a pickled dict of weights holds, nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # protocol-2 pickles of bytes (the arrays' buffers) use it
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not a numpy array")


def resolve_folder(path: Path) -> Path:
    """The weights file inside a HF-layout folder (or an HF cache folder's current snapshot)."""
    snapshots = path / "snapshots"
    if snapshots.is_dir():  # models--org--name: follow refs/main, else the only snapshot
        ref = path / "refs" / "main"
        revisions = [ref.read_text().strip()] if ref.is_file() else sorted(
            p.name for p in snapshots.iterdir())
        if len(revisions) != 1:
            raise PipelineError(f"{path}: {len(revisions)} snapshots and no refs/main; name one")
        path = snapshots / revisions[0]
    for name in FOLDER_FILES:
        if (path / name).is_file():
            return path / name
    if any(path.glob("*.index.json")):
        raise PipelineError(f"{path}: sharded checkpoints are not supported; merge the shards")
    raise PipelineError(f"{path}: a weights folder needs one of {', '.join(FOLDER_FILES)}")


def _load_any(path: Path, trust_code: bool) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except Exception as e:  # safetensors' SafetensorError, OSError...: say which file
            raise PipelineError(f"{path}: not a readable safetensors file, truncated or damaged "
                                f"({' '.join(str(e).split())[:120]})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as torch_error:  # torch.load raises many types for a file that is not one
        pickled_objects = "weights only load failed" in str(torch_error).lower()
        reason = " ".join(str(torch_error).split())[:160]
    try:
        with open(path, "rb") as f:
            return _NumpyOnlyUnpickler(f, encoding="latin1").load()  # py2 ports need latin1
    except Exception:
        pass
    if not trust_code:
        if pickled_objects:
            raise PipelineError(
                f"{path}: holds pickled Python objects (a whole model?), not a state dict; if you "
                "trust its source, allow running its code with `extract --set trust_code=true`"
                " (docs/trust.md; finetune takes state dicts only)") from None
        raise PipelineError(f"{path}: not a readable checkpoint ({reason})") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise PipelineError(f"{path}: cannot unpickle ({' '.join(str(e).split())[:160]})") from None


def read_state_dict(path: str | Path, trust_code: bool = False) -> dict[str, torch.Tensor]:
    """``{parameter name: tensor}`` from a file or folder in any layout listed in the module doc."""
    path = Path(path)
    file = resolve_folder(path) if path.is_dir() else path
    loaded = _load_any(file, trust_code)
    if isinstance(loaded, torch.nn.Module):
        loaded = loaded.state_dict()
    for _ in range(2):  # e.g. {"model": {"state_dict": ...}}
        if isinstance(loaded, dict):
            inner = next((loaded[k] for k in WRAPPER_KEYS if isinstance(loaded.get(k), dict)), None)
            if inner is not None and inner:
                loaded = inner
    if not isinstance(loaded, dict) or not loaded:
        raise PipelineError(f"{file}: holds no state dict (found {type(loaded).__name__})")
    state = {}
    for name, value in loaded.items():
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.require(value, requirements="C"))  # keeps 0-d shapes
        if not isinstance(value, torch.Tensor):
            raise PipelineError(f"{file}: entry {name!r} is a {type(value).__name__}, not a tensor")
        state[str(name)] = value
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def block_counts(state: dict[str, Any], prefix: str = "layer") -> tuple[int, ...]:
    """Residual blocks per stage from names like ``layer3.13.conv1.weight`` (ResNet, IResNet)."""
    counts = []
    for stage in range(1, 5):
        blocks = {k.split(".")[1] for k in state if k.startswith(f"{prefix}{stage}.")}
        counts.append(len([b for b in blocks if b.isdigit()]))
    return tuple(counts)
