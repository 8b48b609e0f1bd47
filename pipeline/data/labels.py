"""The ABAW expression classes and action units, and the Aff-Wild2 EXPR, AU and VA annotation files.

An EXPR annotation file is ``<video>.txt``: a header line naming the 8 classes in this order, then
one integer per frame: label line i+1 (file line i+2, after the header) is frame i, 0-based, image
``{i+1:05d}.jpg``; ``-1`` = not annotated.
An AU annotation file has the header ``AU1,AU2,...,AU26`` (the 12 :data:`AU_NAMES`), then per frame
12 comma-separated values in {0, 1}, or a row of ``-1`` where the frame is not annotated.
A VA annotation file has the header ``valence,arousal``, then per frame two comma-separated numbers
in [-1, 1], or ``-5`` (both, or either) where the frame is invalid (:func:`read_va_annotation`).
:func:`read_annotation` and :func:`read_au_annotation` parse one such file strictly (the rules are
in their docstrings and in ``data_manifests/README.md``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

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

# The 12 action units of the ABAW AU track, in the column order of its annotation files.
AU_NAMES: tuple[str, ...] = (
    "AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24", "AU25", "AU26",
)
NUM_AUS = len(AU_NAMES)
AU_HEADER = ",".join(AU_NAMES)


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


def _lines(data: bytes, path: str | Path) -> list[str]:
    """The stripped lines of an annotation file's bytes, blank lines at the end dropped; raises
    on UTF-16, bytes that are not UTF-8 and an empty file (the rules both formats share)."""
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
    return lines


def _body(lines: list[str], names: Sequence[str], header: str, row: re.Pattern, what: str,
          path: str | Path) -> list[str]:
    """The lines after an annotation file's header, which must name ``names`` (one-line errors:
    a missing header, another header, no ``what`` after it)."""
    if [name.strip() for name in lines[0].split(",")] != list(names):
        if row.fullmatch(lines[0]):
            raise AnnotationError(path, f"line 1: missing header, expected {header!r} before"
                                        f" the {what}")
        raise AnnotationError(path, f"line 1: header {_show(lines[0])} is not {header!r}")
    if len(lines) < 2:
        raise AnnotationError(path, f"header but no {what}")
    return lines[1:]


def parse_annotation(data: bytes, path: str | Path = "<annotation>") -> np.ndarray:
    """Labels of one EXPR annotation file's bytes: int8 ``[n_frames]``, ``-1`` = not annotated.

    Accepted: a UTF-8 BOM, CRLF line ends, whitespace around the header, its names and each label,
    and blank lines at the end. Everything else that deviates from the published format raises
    :class:`AnnotationError` naming ``path`` and the line: no or a different header, bytes that
    are not UTF-8, an empty file or one with no labels, a blank line between labels, a line that
    is not an integer, a label outside ``-1..7``. Nothing is guessed, because a guessed label is a
    wrong training target that no later check can find.
    """
    body = _body(_lines(data, path), CLASSES, HEADER, _LABEL, "labels", path)
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


def _file_bytes(path: str | Path) -> bytes:
    """The bytes of an annotation file, or :class:`AnnotationError` naming it."""
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise AnnotationError(path, f"unreadable ({e.strerror or e})") from None


def read_annotation(path: str | Path) -> np.ndarray:
    """Labels of the annotation file at ``path`` (see :func:`parse_annotation`)."""
    return parse_annotation(_file_bytes(path), path)


# An AU row: 12 integers separated by commas, whitespace allowed around each. The fast path; a
# line that does not match is diagnosed value by value for the error message.
# At most 9 digits, so that the int64 conversion cannot overflow; a longer one is out of range.
_AU_ROW = re.compile(r"\s*-?[0-9]{1,9}\s*(?:,\s*-?[0-9]{1,9}\s*){%d}" % (NUM_AUS - 1))
_AU_VALUES = (UNLABELED, 0, 1)


def _au_row_problem(line: str) -> str:
    """Why an AU line that is not a clean row of 12 values is rejected."""
    if not line:
        return "blank line (one row of 12 values per frame)"
    values = [value.strip() for value in line.split(",")]
    if len(values) != NUM_AUS:
        return f"{len(values)} values, want {NUM_AUS} (one per AU: {AU_HEADER})"
    for name, value in zip(AU_NAMES, values):
        if not _LABEL.fullmatch(value):
            return f"{name} value {_show(value)} is not an integer (0, 1, or -1 for the whole row)"
        if len(value.lstrip("-")) > 9:
            return f"{name} value {_show(value)} is outside -1, 0, 1"
    raise AssertionError(f"row {line!r} matches neither the row pattern nor a problem")


def _clean_au_rows(body: list[str]) -> np.ndarray | None:
    """The rows as int64 ``[n, 12]`` when every row is exactly 12 of ``0``, ``1``, ``-1`` joined
    by commas (a clean file: 5x faster than matching row by row), else None."""
    if any(line.count(",") != NUM_AUS - 1 for line in body):
        return None
    text = ",".join(body)
    if not set(text.split(",")) <= {"0", "1", "-1"}:
        return None
    # Clean integers only: numpy's text parser reads them in one call.
    return np.fromstring(text, dtype=np.int64, sep=",").reshape(len(body), NUM_AUS)


def parse_au_annotation(data: bytes, path: str | Path = "<annotation>") -> np.ndarray:
    """AU labels of one AU annotation file's bytes: int8 ``[n_frames, 12]``, rows of ``-1`` where
    the frame is not annotated.

    Accepted, as for expression files: a UTF-8 BOM, CRLF line ends, whitespace around the header,
    its names and each value, and blank lines at the end. Rejected with the line: no or a
    different header (an EXPR or VA file in the AU folder), bytes that are not UTF-8, an empty
    file or one with no rows, a blank line between rows, a row without exactly 12 values, a value
    that is not an integer, a value outside {-1, 0, 1}, and a row mixing -1 with 0/1 (the format
    marks an unannotated frame with a whole row of -1; a partial one means a damaged file).
    """
    body = _body(_lines(data, path), AU_NAMES, AU_HEADER, _AU_ROW, "rows", path)
    values = _clean_au_rows(body)
    if values is None:  # something to tolerate (whitespace) or to reject: line by line
        for line_no, line in enumerate(body, 2):
            if not _AU_ROW.fullmatch(line):
                raise AnnotationError(path, f"line {line_no}: {_au_row_problem(line)}")
        values = np.array([line.split(",") for line in body]).astype(np.int64)
    outside = ~np.isin(values, _AU_VALUES)
    if outside.any():
        row, column = np.argwhere(outside)[0]
        raise AnnotationError(path, f"line {row + 2}: {AU_NAMES[column]} value "
                                    f"{values[row, column]} is outside -1, 0, 1")
    unlabelled = values == UNLABELED
    mixed = unlabelled.any(axis=1) & ~unlabelled.all(axis=1)
    if mixed.any():
        row = int(np.flatnonzero(mixed)[0])
        raise AnnotationError(path, f"line {row + 2}: -1 mixed with 0/1 values (an unannotated "
                                    "frame is a whole row of -1)")
    return values.astype(np.int8)


def read_au_annotation(path: str | Path) -> np.ndarray:
    """AU labels of the annotation file at ``path`` (see :func:`parse_au_annotation`)."""
    return parse_au_annotation(_file_bytes(path), path)


# The two dimensions of the ABAW VA track, in the column order of its annotation files.
VA_NAMES: tuple[str, ...] = ("valence", "arousal")
VA_HEADER = ",".join(VA_NAMES)
VA_INVALID = -5.0  # the VA files' mark of an invalid frame (and the manifest's)
_NUMBER = r"\s*[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\s*"
_VA_ROW = re.compile(_NUMBER + "," + _NUMBER)


def parse_va_annotation(data: bytes, path: str | Path = "<annotation>") -> np.ndarray:
    """Valence and arousal of one VA annotation file's bytes: float32 ``[n_frames, 2]``, ``-5``
    where a frame is invalid (a row with one -5 is invalid in both: ABAW scores frames, and a
    half-annotated frame is a damaged one).

    Accepted as for the other formats (BOM, CRLF, whitespace, blank lines at the end). Raises
    :class:`AnnotationError` naming ``path`` and the line: no or another header, a row that is not
    two decimal numbers, a value outside [-1, 1] other than -5 (NaN and infinities included).
    """
    body = _body(_lines(data, path), VA_NAMES, VA_HEADER, _VA_ROW, "rows", path)
    values = np.empty((len(body), 2), dtype=np.float64)
    for line_no, line in enumerate(body, 2):
        if not _VA_ROW.fullmatch(line):
            what = "blank line" if not line else f"{_show(line)} is not two numbers"
            raise AnnotationError(path, f"line {line_no}: {what} (one 'valence,arousal' row per "
                                        "frame, -5 = invalid)")
        values[line_no - 2] = [float(v) for v in line.split(",")]
    invalid = values == VA_INVALID
    outside = ~invalid & (np.abs(values) > 1)
    if outside.any():
        row, column = np.argwhere(outside)[0]
        raise AnnotationError(path, f"line {row + 2}: {VA_NAMES[column]} "
                                    f"{values[row, column]:g} is outside [-1, 1] (and not -5)")
    values[invalid.any(axis=1)] = VA_INVALID
    return values.astype(np.float32)


def read_va_annotation(path: str | Path) -> np.ndarray:
    """VA labels of the annotation file at ``path`` (see :func:`parse_va_annotation`)."""
    return parse_va_annotation(_file_bytes(path), path)
