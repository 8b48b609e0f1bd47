"""The ABAW expression classes and the Aff-Wild2 EXPR annotation file format.

An annotation file is ``<video>.txt``: a header line naming the 8 classes in this order, then one
integer per frame: label line i+1 (file line i+2, after the header) is frame i, 0-based, image
``{i+1:05d}.jpg``; ``-1`` = not annotated.
:func:`read_annotation` parses one such file strictly (the rules are in its docstring and in
``data_manifests/README.md``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError

CLASSES: tuple[str, ...] = (
    "Neutral",
    "Anger",
    "Disgust",
    "Fear",
    "Happiness",
    "Sadness",
    "Surprise",
    "Other",
)
NUM_CLASSES = len(CLASSES)
UNLABELED = -1
HEADER = ",".join(CLASSES)


class AnnotationError(PipelineError):
    """An annotation file that cannot be used; ``reason`` says why, with the line if it has one."""

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


# One label per line: an optional minus sign and ASCII digits only. int() alone would also accept
# "+3", "3_0" and non-ASCII digits, none of which the published format writes.
_LABEL = re.compile(r"-?[0-9]+")


def _show(text: str, limit: int = 60) -> str:
    """A line quoted for an error message, shortened so that the message stays one line."""
    return repr(text if len(text) <= limit else text[:limit] + "...")


def parse_annotation(data: bytes, path: str | Path = "<annotation>") -> np.ndarray:
    """Labels of one EXPR annotation file's bytes: int8 ``[n_frames]``, ``-1`` = not annotated.

    Accepted: a UTF-8 BOM, CRLF line ends, whitespace around the header, its names and each label,
    and blank lines at the end. Everything else that deviates from the published format raises
    :class:`AnnotationError` naming ``path`` and the line: no or a different header, bytes that
    are not UTF-8, an empty file or one with no labels, a blank line between labels, a line that
    is not an integer, a label outside ``-1..7``. Nothing is guessed, because a guessed label is a
    wrong training target that no later check can find.
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise AnnotationError(path, "UTF-16 text (byte-order mark); save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")  # -sig: drops a UTF-8 byte-order mark if there is one
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise AnnotationError(
            path, f"line {line}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start})"
        ) from None
    if not text.strip():
        raise AnnotationError(path, "empty file")
    # split("\n") rather than splitlines(): splitlines also breaks at form feeds and other
    # separators, which would shift every later label by a frame.
    lines = [line.strip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    header = lines[0]
    if [name.strip() for name in header.split(",")] != list(CLASSES):
        if _LABEL.fullmatch(header):
            raise AnnotationError(
                path, f"line 1: missing header, expected {HEADER!r} before the labels"
            )
        raise AnnotationError(path, f"line 1: header {_show(header)} is not {HEADER!r}")
    body = lines[1:]
    if not body:
        raise AnnotationError(path, "header but no labels")
    values = []
    for line_no, line in enumerate(body, 2):
        if not _LABEL.fullmatch(line):
            what = "blank line" if not line else f"{_show(line)} is not an integer label"
            raise AnnotationError(path, f"line {line_no}: {what} (one label per frame, -1..7)")
        value = int(line)
        if not UNLABELED <= value < NUM_CLASSES:
            raise AnnotationError(path, f"line {line_no}: label {value} is outside -1..7")
        values.append(value)
    return np.asarray(values, dtype=np.int8)


def read_annotation(path: str | Path) -> np.ndarray:
    """Labels of the annotation file at ``path`` (see :func:`parse_annotation`)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise AnnotationError(path, f"unreadable ({e.strerror or e})") from None
    return parse_annotation(data, path)
