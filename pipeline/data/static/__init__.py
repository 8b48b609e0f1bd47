"""Static (still-image) expression datasets for a first fine-tune stage: readers of the published
layouts of AffectNet, RAF-DB, FER2013 and ExpW, each mapped to the project's 8 classes
(:data:`pipeline.data.labels.CLASSES`), and :func:`~pipeline.data.static.prepare.prepare`, which
writes their face crops and a manifest directory that ``finetune --manifests`` reads unchanged.

A dataset is named ``NAME:ROOT`` (:func:`parse_spec`), NAME one of :data:`READERS`. Every reader
returns a :class:`~pipeline.data.static.common.StaticReading`: the images it could use, one
:class:`~pipeline.data.static.common.Rejection` per line or file it could not (file, line,
reason), and the images of source classes that have no place among the 8, counted per class.
The layouts and the class tables are in docs/static-datasets.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pipeline.data.static import affectnet, expw, fer2013, rafdb
from pipeline.data.static.common import StaticReading
from pipeline.errors import PipelineError
from pipeline.suggest import did_you_mean

READERS: dict[str, Callable[[Path], StaticReading]] = {
    "affectnet": affectnet.read, "rafdb": rafdb.read, "fer2013": fer2013.read, "expw": expw.read}


def parse_spec(spec: str) -> tuple[str, Path]:
    """``NAME:ROOT`` -> (name, root); a one-line error for an unknown name or a missing root."""
    name, sep, root = spec.partition(":")
    name = name.strip().lower()
    if not sep or not root:
        raise PipelineError(f"{spec}: want NAME:ROOT, NAME one of {', '.join(READERS)}")
    if name not in READERS:
        raise PipelineError(f"{spec}: unknown static dataset {name!r} (known: "
                            f"{', '.join(READERS)}){did_you_mean(name, READERS)}")
    if not Path(root).exists():
        raise PipelineError(f"{root}: no such dataset folder (for {name})")
    return name, Path(root)


def read(name: str, root: str | Path) -> StaticReading:
    """Read dataset ``name`` at ``root`` (its published layout)."""
    return READERS[name](Path(root))
