"""Static expression datasets (AffectNet, RAF-DB, FER2013, ExpW) as a manifest directory of face
crops: the input of a first fine-tune stage before Aff-Wild2 (``finetune --static NAME:ROOT``, or
``fer-pipeline static-data NAME:ROOT --out STORE`` then ``finetune --manifests STORE``).
See :mod:`pipeline.data.static`.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.static import parse_spec
from pipeline.data.static.prepare import Prepared, prepare


def prepare_static(spec: str, store: str | Path, write: bool = True) -> Prepared:
    """Read ``NAME:ROOT`` and write (or keep, when complete for the same files) ``store``;
    ``write=False``: refuse a store that is not complete already."""
    name, root = parse_spec(spec)
    return prepare(name, root, store, write=write)
