"""What every static-dataset reader returns: labelled still images, and one line for each line or
file it could not use (:class:`Rejection`), and the images whose class has no place among the
project's 8 (:attr:`StaticReading.unmapped`, counted per source class). Nothing is dropped
without being counted in one of the two.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from pipeline.data.labels import CLASSES

STATIC_SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class StaticImage:
    """One labelled face image of a static dataset."""

    name: str  # unique in the dataset: the image's path under the root, or the CSV row
    split: str  # train, val or test (the published split it belongs to)
    label: int  # 0..7, the project's class (labels.CLASSES)
    path: Path | None = None  # the image file (None: ``pixels`` hold it)
    box: tuple[int, int, int, int] | None = None  # left, top, right, bottom; None: whole image
    pixels: np.ndarray | None = field(default=None, compare=False)  # uint8 [H, W] (FER2013)


@dataclass(frozen=True)
class Rejection:
    """One line or file a reader could not use."""

    file: str
    line: int | None  # 1-based line of ``file``; None: the whole file
    kind: str  # short stable name, e.g. "bad_label", "missing_image"
    reason: str

    def text(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.reason}"

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "kind": self.kind, "reason": self.reason}


@dataclass
class StaticReading:
    """A reader's result: the images, what was rejected, and what did not map."""

    dataset: str
    root: str
    sources: list[str]  # the annotation files read (their bytes identify the reading)
    images: list[StaticImage] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    unmapped: Counter = field(default_factory=Counter)  # (split, source class) -> images

    def reject(self, file: str | Path, line: int | None, kind: str, reason: str) -> None:
        self.rejections.append(Rejection(str(file), line, kind, reason))

    def counts(self) -> dict:
        """Per split: images per project class, and images per unmapped source class."""
        out: dict = {}
        for split in STATIC_SPLITS:
            labels = np.array([i.label for i in self.images if i.split == split], dtype=np.int64)
            per_class = np.bincount(labels, minlength=len(CLASSES)) if len(labels) else \
                np.zeros(len(CLASSES), dtype=np.int64)
            unmapped = {name: n for (s, name), n in sorted(self.unmapped.items()) if s == split}
            if len(labels) or unmapped:
                out[split] = {"images": int(len(labels)),
                              "labelled": {c: int(n) for c, n in zip(CLASSES, per_class)},
                              "unmapped": unmapped}
        return out

    def report(self) -> dict:
        return {"dataset": self.dataset, "root": self.root, "sources": self.sources,
                "counts": self.counts(),
                "rejected": dict(Counter(r.kind for r in self.rejections)),
                "rejections": [r.to_json() for r in self.rejections]}


def listed_lines(reading: StaticReading, listing: Path) -> list[tuple[int, list[str]]]:
    """The (line number, whitespace-split fields) of a label list's non-blank lines; an
    unreadable list is one rejection (and no lines)."""
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reading.reject(listing, None, "unreadable_list", f"cannot read the label list ({e})")
        return []
    return [(n, line.split()) for n, line in enumerate(lines, 1) if line.strip()]


def relative_image(root: Path, name: str) -> Path | None:
    """``root / name`` for a relative path that stays under ``root`` (no ``..``, not absolute,
    no backslash); None otherwise (a list must not point a reader outside its dataset)."""
    if not name or "\\" in name or "\x00" in name:
        return None
    parts = PurePosixPath(name)
    if parts.is_absolute() or ".." in parts.parts:
        return None
    return root / parts


def parse_int(text: str) -> int | None:
    """``text`` as a whole number (optionally written ``5.0``), else None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


def csv_rows(reading: StaticReading, path: Path, rows: Iterator[list[str]],
             width: int) -> Iterator[tuple[int, list[str]]]:
    """The data rows of ``rows`` (a ``csv.reader`` past its header) as (line, fields): blank rows
    skipped, a row of another field count than ``width`` rejected, and an unreadable row ends the
    reading with one rejection (the reader cannot resynchronise after a broken quote or byte)."""
    line = 1
    while True:
        try:
            row = next(rows)
        except StopIteration:
            return
        except (csv.Error, UnicodeDecodeError) as e:
            reading.reject(path, line + 1, "bad_line", f"unreadable row ({e})")
            return
        line = rows.line_num
        if not row:
            continue
        if len(row) != width:
            reading.reject(path, line, "bad_line", f"{len(row)} fields, the header has {width}")
            continue
        yield line, row
