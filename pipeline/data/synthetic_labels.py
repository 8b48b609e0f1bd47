"""The demo's label tracks (:mod:`pipeline.data.synthetic` describes the design and its ceilings).

A video's **pair** track (what the face shows; segments of 10-40 frames, never the same pair twice
in a row) and **member** track (what the audio tells; 50-100 frames, alternating) make its clean
class ``2 * pair + member``; :func:`expression_labels` adds the annotator noise and the ``-1``
runs, :func:`au_rows` the AU rows of the clean classes (``CLASS_AUS``) with their own ``-1`` rows
and flips, and :func:`missing_share` the face crops a ``missing_faces`` demo loses. Each draws
from the generators it is given, in the order the generator calls them: that order is what keeps
a demo dataset byte-identical for a seed.
"""

from __future__ import annotations

import numpy as np

from pipeline.data.labels import AU_NAMES, NUM_AUS, NUM_CLASSES, UNLABELED

PAIR_WEIGHTS = (0.30, 0.27, 0.23, 0.20)  # how often each pair {0,1} {2,3} {4,5} {6,7} is drawn
MEMBER_WEIGHTS = (0.55, 0.45)  # which member (first / second class of a pair) a video starts with
PAIR_SEGMENT = (10, 40)  # frames per pair segment (inclusive range)
MEMBER_SEGMENT = (50, 100)  # frames per member segment: long, because audio is read in windows
# The AUs each class shows: simplified FACS prototypes (AU9, AU5 and AU20 are not in the ABAW set).
CLASS_AUS: tuple[tuple[str, ...], ...] = (
    (),  # Neutral
    ("AU4", "AU7", "AU23"),  # Anger: brow lowerer, lid tightener, lip tightener
    ("AU10", "AU25"),  # Disgust: upper lip raiser, lips part
    ("AU1", "AU2", "AU4", "AU25"),  # Fear: brows raised and drawn together, lips part
    ("AU6", "AU12"),  # Happiness: cheek raiser, lip corner puller
    ("AU1", "AU4", "AU15"),  # Sadness: inner brow raiser, brow lowerer, lip corner depressor
    ("AU1", "AU2", "AU26"),  # Surprise: brows raised, jaw drop
    ("AU24",),  # Other: lip pressor
)
_AU_PROFILES = np.array([[name in aus for name in AU_NAMES] for aus in CLASS_AUS], dtype=np.int8)


def segments(rng: np.random.Generator, n: int, length: tuple[int, int]) -> list[tuple[int, int]]:
    """Cut ``range(n)`` into consecutive [start, end) segments of the given length range."""
    bounds, start = [], 0
    while start < n:
        end = min(n, start + int(rng.integers(length[0], length[1] + 1)))
        bounds.append((start, end))
        start = end
    return bounds


def pair_track(rng: np.random.Generator, n: int) -> np.ndarray:
    track = np.empty(n, dtype=np.int64)
    previous = -1
    for start, end in segments(rng, n, PAIR_SEGMENT):
        weights = np.array(PAIR_WEIGHTS)
        if previous >= 0:
            weights[previous] = 0.0  # a new segment shows a new pair
        previous = int(rng.choice(len(weights), p=weights / weights.sum()))
        track[start:end] = previous
    return track


def member_track(rng: np.random.Generator, n: int) -> np.ndarray:
    """Members alternate segment by segment (a video has only a few): keeps the two balanced."""
    track = np.empty(n, dtype=np.int64)
    member = int(rng.choice(2, p=MEMBER_WEIGHTS))
    for start, end in segments(rng, n, MEMBER_SEGMENT):
        track[start:end] = member
        member = 1 - member
    return track


def random_runs(rng: np.random.Generator, n: int, count: int, length: tuple[int, int]) -> np.ndarray:
    """A mask of ``count`` runs at random places, each of the given length range."""
    mask = np.zeros(n, dtype=bool)
    for _ in range(count):
        span = int(rng.integers(length[0], length[1] + 1))
        start = int(rng.integers(0, max(1, n - span)))
        mask[start:start + span] = True
    return mask


def missing_share(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    """A mask of exactly ``round(share * n)`` frames, in runs of 5-30 frames at random places."""
    target = int(round(share * n))
    mask = np.zeros(n, dtype=bool)
    while mask.sum() < target:
        span = int(rng.integers(5, 31))
        start = int(rng.integers(0, max(1, n - span)))
        new = np.flatnonzero(~mask[start:start + span]) + start
        mask[new[:target - int(mask.sum())]] = True  # the last run stops at the target
    return mask


def expression_labels(rng: np.random.Generator, noise_rng: np.random.Generator, pair: np.ndarray,
            member: np.ndarray, noise: float) -> tuple[np.ndarray, int]:
    """Noisy labels with -1 runs, and how many labelled frames disagree with the cues.

    The flips come from their own generator, so that datasets differing only in ``noise`` have
    the same frames, audio and clean labels.
    """
    n = len(pair)
    clean = 2 * pair + member
    labels = clean.copy()
    if rng.random() < 0.5:  # about half the clips have unannotated stretches
        labels[random_runs(rng, n, int(rng.integers(1, 3)), (3, 12))] = UNLABELED
    annotated = np.flatnonzero(labels != UNLABELED)
    target = int(round(noise * len(annotated)))
    noisy = np.zeros(n, dtype=bool)
    while noisy.sum() < target:
        start = int(noise_rng.choice(annotated))
        run = np.arange(start, min(n, start + int(noise_rng.integers(1, 5))))
        run = run[(labels[run] != UNLABELED) & ~noisy[run]][: target - int(noisy.sum())]
        if run.size:
            wrong = (clean[run[0]] + noise_rng.integers(1, NUM_CLASSES)) % NUM_CLASSES
            labels[run] = wrong
            noisy[run] = True
    return labels.astype(np.int8), int(noisy.sum())


def au_rows(rng: np.random.Generator, noise_rng: np.random.Generator, clean: np.ndarray,
               noise: float) -> np.ndarray:
    """AU rows int8 ``[T, 12]`` of the classes ``clean``, with ``-1`` rows and one AU flipped in a
    fraction ``noise`` of annotated frames. Its own generators: the expression data never moves."""
    n = len(clean)
    rows = _AU_PROFILES[clean]
    if rng.random() < 0.5:  # about half the clips have unannotated stretches
        rows[random_runs(rng, n, int(rng.integers(1, 3)), (3, 12))] = UNLABELED
    annotated = np.flatnonzero(rows[:, 0] != UNLABELED)
    flipped = noise_rng.choice(annotated, size=int(round(noise * len(annotated))), replace=False)
    column = noise_rng.integers(0, NUM_AUS, size=len(flipped))
    rows[flipped, column] = 1 - rows[flipped, column]
    return rows
