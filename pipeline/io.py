"""Atomic writes: every output file appears whole or not at all.

Each writer writes into ``<name>.tmp`` beside the target and renames it over the target with
:func:`os.replace` (atomic on POSIX within one file system), so a crash or an interruption never
leaves a half-written ``scores.json``, checkpoint or submission where a reader would take it for
a finished one; on an exception the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


def temporary_path(path: str | Path) -> Path:
    """The name a file is written under before it is renamed to ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path``, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """``obj`` as indented JSON with a final newline."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def save_npz(path: str | Path, **arrays: Any) -> Path:
    """Uncompressed ``np.savez`` of ``arrays`` (written through an open file: numpy would
    otherwise append ``.npz`` to the temporary name)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` (torch is imported only by the callers that save tensors)."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def save_figure(path: str | Path, figure: Any, **options: Any) -> Path:
    """Save a matplotlib figure; the format comes from ``path``'s suffix (not the temporary one)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", **options)
    return path
