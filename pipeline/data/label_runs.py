"""How a manifest record stores labels: run-length lists, and AU rows packed into one code a frame.

Aff-Wild2 labels come in long runs, so :func:`encode_runs` writes ``[[label, count], ...]`` (a
2.7-million-frame dataset stays a few hundred kilobytes of manifest); VA values the same way with
:func:`encode_value_runs` (each value the shortest decimal that reads back as the same float32).
AU labels are first packed by :func:`pack_au` into one code per frame (bit k = the k-th of
``AU_NAMES``, ``-1`` = not annotated). :class:`pipeline.data.manifest.Clip` reads and writes its
records with these, and its digests hash them.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.labels import NUM_AUS, UNLABELED


def encode_runs(labels: np.ndarray) -> list[list[int]]:
    """Run-length encode a label array: [[label, count], ...]."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
    counts = np.diff(np.r_[starts, labels.size])
    return [[int(labels[s]), int(c)] for s, c in zip(starts, counts)]


def encode_value_runs(values: np.ndarray) -> list[list[float | int]]:
    """Run-length encode float32 values (VA labels): [[value, count], ...], each value the
    shortest decimal that reads back as the same float32."""
    values = np.asarray(values, dtype=np.float32)
    if values.size == 0:
        return []
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    counts = np.diff(np.r_[starts, values.size])
    return [[float(np.format_float_positional(values[s], unique=True, trim="-")), int(c)]
            for s, c in zip(starts, counts)]


def decode_runs(runs: list[list[int]], dtype: type = np.int8) -> np.ndarray:
    """Inverse of :func:`encode_runs` (and of :func:`encode_value_runs` with a float dtype)."""
    if not runs:
        return np.zeros(0, dtype=dtype)
    values, counts = zip(*runs)
    return np.repeat(np.asarray(values, dtype=dtype), counts)


_AU_BITS = (1 << np.arange(NUM_AUS)).astype(np.int16)


def pack_au(au_labels: np.ndarray) -> np.ndarray:
    """AU labels int8 ``[T, 12]`` -> int16 ``[T]`` codes: bit k set = AU k active, ``-1`` = a row
    not annotated. Rows mixing -1 with 0/1 cannot be packed (the reader never makes them)."""
    au_labels = np.asarray(au_labels)
    unlabelled = au_labels == UNLABELED
    if (unlabelled.any(axis=1) & ~unlabelled.all(axis=1)).any():
        raise ValueError("AU rows mixing -1 with 0/1 cannot be packed")
    codes = (np.where(unlabelled, 0, au_labels).astype(np.int16) * _AU_BITS).sum(axis=1)
    return np.where(unlabelled[:, 0], UNLABELED, codes).astype(np.int16)


def unpack_au(codes: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pack_au`: int8 ``[T, 12]``."""
    codes = np.asarray(codes, dtype=np.int16)
    au_labels = ((codes[:, None] & _AU_BITS) != 0).astype(np.int8)
    au_labels[codes == UNLABELED] = UNLABELED
    return au_labels
