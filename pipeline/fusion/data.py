"""Features for stage two, streamed from the store a few clips at a time.

Heads never see the store. They see :class:`Table` objects: the arrays of a group of consecutive
clips of at most ``buffer_mb / 3`` MiB concatenated row-wise (one row per video frame; a clip
larger than that is a group of its own), with each row's label,
face flag, audio flag, and the purity mask of its dynamic audio windows.
:class:`~pipeline.fusion.stream.ClipStream` yields the tables of a list of clips in order and loads the next group in a background thread
while the caller trains on the current one. Memory holds at most three groups (the one in use,
the next, and the previous one until the caller lets it go), so about ``buffer_mb`` whatever the
length of the clips, plus a cache of clips capped at ``cache_mb``, whatever the size of the
dataset, and loading overlaps compute. Groups are bounded in bytes, not clips, because clip
lengths vary by two orders of magnitude (Aff-Wild2: from a few hundred to tens of thousands of
frames); which clips form a group depends only on their sizes and ``buffer_mb``, so training
stays deterministic. The store is opened
once per run and every clip is read whole (a handful of chunk reads), never row by row.
Every read is checked by the store (recorded chunk sizes and crc32c per chunk, or the sha256 of
arrays written before crc32c): a deleted or damaged chunk stops training with one line naming the
store, clip and array (:class:`~pipeline.features.store_format.CorruptArray`), never reads as zeros.

Why not ``torch.utils.data.DataLoader``: its worker processes would each reopen the store and
interleave groups in an order that depends on timing; a single prefetch thread keeps the order
(and so training) deterministic at no loss, because reading a clip is cheap next to training on it.

Clips without audio (``has_audio`` False in the store) get zeros for their audio arrays and
``audio`` False, whether or not the store holds arrays for them.

**Arrays at their own rate** (``FeatureRequest.series``, e.g. ``logmel [T_mel, n_mels]``) are not
per frame: a table keeps them whole, one per clip, with their rate and the clip's fps
(:class:`Series`), and the head cuts the windows it needs (``features.audio_windows``). A clip
without audio gets one row of zeros. Such an array requested as a per-frame array (an import
with ``--rate hop=...`` as ``head.audio``) is read interpolated to the video frames
(:func:`at_video_frames`).

**Tasks.** A run trains expressions (``"expr"``) and optionally action units (``"au"``) and
valence-arousal (``"va"``, ``FeatureRequest.tasks``; VA rows of no label are -5). A clip's labels of a task fill its rows only where the clip's split of
that task fits the table's use (:func:`task_labels`): a training table holds only the labels of
the task's training split, so a clip in the expression training split and the AU validation split
trains expressions and never AUs; an evaluation table holds every label as scores see it (the
leakage guard's exclusions applied, ``Clip.scoring_labels``), and the loop scores a task only on
the clips of that task's evaluated split.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from pipeline.data.labels import CLASSES, NUM_AUS, UNLABELED, VA_INVALID, VA_NAMES
from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import (
    AUDIO_VALID,
    VALID,
    DamagedMetadata,
    StoreError,
    mask_name,
)
from pipeline.training.windows import window_passes

OTHER = CLASSES.index("Other")  # the class a 7-class run (task.classes = 7) does not have


@dataclass(frozen=True)
class FeatureRequest:
    """What a head reads from the store."""

    arrays: tuple[str, ...]  # store arrays to read (besides "valid"), image and audio
    audio: tuple[str, ...] = ()  # those of them that are audio (zeros for clips without audio)
    # Dynamic windows of the audio arrays, in their order: (lengths, purity thresholds, purity
    # rule), or None (see sampling.purity_rule).
    purity: tuple[tuple[int, ...], tuple[float, ...], str] | None = None
    # Those of `arrays` stored at their own rate (log-mel), kept whole per clip (Table.series).
    series: tuple[str, ...] = ()
    tasks: tuple[str, ...] = ("expr",)  # label kinds to read: "expr", and "au" for AU labels
    # Expression classes (task.classes): 7 reads frames annotated Other as unlabelled (-1), for
    # training and scoring alike, as the ABAW 2021 track had no Other.
    classes: int = 8

    def __post_init__(self) -> None:
        assert set(self.series) <= set(self.arrays), f"series {self.series} not in {self.arrays}"


@dataclass(frozen=True)
class Series:
    """One clip's array at its own rate, with the clocks needed to align it to video frames."""

    data: np.ndarray  # [T_rate, *shape] as stored (one row of zeros for a clip without audio)
    rate: float  # rows per second
    fps: float  # the clip's video frame rate


@dataclass(eq=False)
class Table:
    """The frames of a group of clips, concatenated. Row ``r`` belongs to clip ``clip_index[r]``."""

    clip_ids: tuple[str, ...]
    offsets: np.ndarray  # int64 [n_clips + 1]: clip i is rows offsets[i]:offsets[i + 1]
    labels: np.ndarray  # int64 [N]: class 0..7, -1 = unlabelled (every frame of a test clip)
    valid: np.ndarray  # bool [N]: the frame had a face image
    audio: np.ndarray  # bool [N]: the frame's clip has audio
    window_ok: np.ndarray  # bool [N, n_audio]: the audio window may train (purity; all True else)
    arrays: dict[str, np.ndarray]  # store name -> [N, *shape] as stored (float16 features)
    series: dict[str, list[Series]] = field(default_factory=dict)  # own-rate arrays, one per clip
    au_labels: np.ndarray | None = None  # int8 [N, 12], -1 = unlabelled; None: AU not a task
    va_labels: np.ndarray | None = None  # float32 [N, 2], -5 = invalid; None: VA not a task

    def __post_init__(self) -> None:
        sizes = np.diff(self.offsets)
        self.clip_index = np.repeat(np.arange(len(self.clip_ids)), sizes)

    @property
    def n_rows(self) -> int:
        return int(self.labels.size)

    def clip_rows(self, i: int) -> slice:
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def window(self, rows: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``rows[:, None] + steps[None, :]`` kept inside each row's clip: (index, inside).

        ``index`` [B, K] is clamped to the clip (safe to gather with); ``inside`` [B, K] says
        which positions really lie in the clip.
        """
        rows = np.asarray(rows, dtype=np.int64)
        clip = self.clip_index[rows]
        start, stop = self.offsets[clip][:, None], self.offsets[clip + 1][:, None]
        wanted = rows[:, None] + np.asarray(steps, dtype=np.int64)[None, :]
        inside = (wanted >= start) & (wanted < stop)
        return np.clip(wanted, start, stop - 1), inside

    def take(self, name: str, rows: np.ndarray) -> np.ndarray:
        """float32 ``[*rows.shape, *shape]`` features of array ``name`` at ``rows``."""
        return self.arrays[name][rows].astype(np.float32)


def check_inputs(store: FeatureStore, clips: Sequence[Clip], request: FeatureRequest
                 ) -> dict[str, tuple[int, ...]]:
    """Check every clip is in the store with the manifest's length and lists every requested
    array; return each array's per-frame shape. Raises one-line errors naming the clip.

    Two metadata reads per clip, so that a 548-clip store is checked in seconds; whether each
    array is *complete* (its marker) is checked when it is read.
    """
    dims: dict[str, tuple[int, ...]] = {}
    for clip in clips:
        try:
            attrs = store.clip_attrs(clip.clip_id)
        except DamagedMetadata:
            raise  # names the damaged file and what to run
        except StoreError:
            raise PipelineError(f"clip {clip.clip_id} ({clip.split}): not in the store {store.path}"
                                " (extract features from the same manifests)") from None
        if attrs.get("n_frames") != clip.n_frames:
            raise PipelineError(f"clip {clip.clip_id}: {clip.n_frames} frames in the manifest but "
                                f"{attrs.get('n_frames')} in the store {store.path} (re-run extract)")
        has_audio = attrs.get("has_audio", True)
        present = set(store.array_names(clip.clip_id))
        for name in (VALID, *request.arrays):
            if name in request.audio and not has_audio:
                continue  # a clip without audio needs no audio arrays
            if name not in present:
                raise PipelineError(f"clip {clip.clip_id}: no array {name!r} in the store "
                                    f"{store.path} (it has: {', '.join(sorted(present)) or 'none'})")
            if name != VALID and name not in dims:
                dims[name] = store.shape(clip.clip_id, name)[1:]
    missing = [name for name in request.arrays if name not in dims]
    if missing:
        raise PipelineError(f"no clip in the store {store.path} has the array(s) {', '.join(missing)}")
    return dims


def feature_keys(store: FeatureStore, clip_id: str, request: FeatureRequest) -> dict[str, str]:
    """Cache key of each requested array (as written for ``clip_id``): the identity of the features."""
    keys = {}
    for name in (VALID, *request.arrays):
        marker = store.marker(clip_id, name)
        if marker is not None:
            keys[name] = str(marker.get("cache_key"))
    return keys


@dataclass(eq=False)
class ClipArrays:
    """One clip's rows, as read from the store (a :class:`Table` concatenates several)."""

    clip_id: str
    labels: np.ndarray  # int64 [T]
    valid: np.ndarray  # bool [T]
    has_audio: bool
    window_ok: np.ndarray  # bool [T, n_audio]
    arrays: dict[str, np.ndarray]  # store name -> [T, *shape]
    series: dict[str, Series] = field(default_factory=dict)  # own-rate arrays (request.series)
    au_labels: np.ndarray | None = None  # int8 [T, 12]; None when AU is not a task
    # bool [T]: frames with audio; None: all of them if has_audio, else none (see read_clip)
    audio: np.ndarray | None = None
    va_labels: np.ndarray | None = None  # float32 [T, 2]; None when VA is not a task

    @property
    def audio_rows(self) -> np.ndarray:
        """bool [T]: which rows have audio features."""
        if self.audio is not None:
            return self.audio
        return np.full(self.labels.size, self.has_audio)

    @property
    def nbytes(self) -> int:
        au = tuple(a for a in (self.au_labels, self.va_labels) if a is not None)
        return sum(a.nbytes for a in (self.labels, self.valid, self.window_ok,
                                      *self.arrays.values(), *au,
                                      *(s.data for s in self.series.values())))


def task_labels(clip: Clip, task: str, train: bool) -> np.ndarray | None:
    """The clip's labels of ``task`` for a training table (``train``: only if the clip is in the
    task's training split) or an evaluation table (as the leakage guard leaves them for scores);
    None where the clip has none for that use."""
    if train and clip.task_split(task) != "train":
        return None
    return clip.scoring_labels(task)


def at_video_frames(data: np.ndarray, rate: float, clip: Clip) -> np.ndarray:
    """An array at its own clock (``rate`` rows per second; an import with ``--rate hop=...``)
    as one row per video frame: linearly interpolated at each frame's time ``i / fps`` (row ``j``
    stands at ``j / rate``; frames past the last row take it). A per-frame array passes as it is.

    Interpolation, not a mean over each frame's span, because that is how stage one fills the
    frames between strided audio embeddings (``features.audio_windows``).
    """
    n = clip.n_frames
    if (rate == clip.fps and len(data) == n) or not len(data):
        return data
    position = np.arange(n) / clip.fps * rate  # each frame's time, in rows
    before = np.clip(np.floor(position).astype(np.int64), 0, len(data) - 1)
    after = np.minimum(before + 1, len(data) - 1)
    weight = np.clip(position - before, 0.0, 1.0).reshape(n, *([1] * (data.ndim - 1)))
    rows = data.astype(np.float32)
    return (rows[before] * (1 - weight) + rows[after] * weight).astype(data.dtype)


def read_clip(store: FeatureStore, clip: Clip, request: FeatureRequest,
              dims: dict[str, tuple[int, ...]], train: bool) -> ClipArrays:
    """Read one whole clip; ``train`` computes the purity masks of its audio windows."""
    n = clip.n_frames
    has_audio = bool(store.clip_attrs(clip.clip_id).get("has_audio", True))
    valid = store.read(clip.clip_id, VALID).astype(bool).reshape(-1)
    if valid.size != n:
        raise PipelineError(f"clip {clip.clip_id}: {valid.size} '{VALID}' flags for {n} frames")
    # scoring_labels: an expression-val clip the leakage guard excluded (it trains the AU task)
    # must not steer early stopping either.
    expr = task_labels(clip, "expr", train) if "expr" in request.tasks else None
    labels = (np.full(n, UNLABELED, dtype=np.int64) if expr is None else expr.astype(np.int64))
    if request.classes == 7:
        labels[labels == OTHER] = UNLABELED
    au_labels = None
    if "au" in request.tasks:
        au = task_labels(clip, "au", train)
        au_labels = (np.full((n, NUM_AUS), UNLABELED, dtype=np.int8) if au is None
                     else au.astype(np.int8))
    arrays, series = {}, {}
    for name in request.series:
        if name in request.audio and not has_audio:
            series[name] = Series(np.zeros((1, *dims[name]), np.float32), 1.0, clip.fps)
            continue
        data = store.read(clip.clip_id, name)
        if data.ndim != 1 + len(dims[name]) or data.shape[1:] != dims[name] or not data.shape[0]:
            raise PipelineError(f"clip {clip.clip_id}: array {name!r} has shape {data.shape}, "
                                f"expected [T, {', '.join(map(str, dims[name]))}] with T > 0")
        series[name] = Series(data, store.rate(clip.clip_id, name), clip.fps)
    for name in request.arrays:
        if name in request.series:
            continue
        if name in request.audio and not has_audio:
            arrays[name] = np.zeros((n, *dims[name]), dtype=np.float16)
            continue
        data = at_video_frames(store.read(clip.clip_id, name), store.rate(clip.clip_id, name),
                               clip)
        if data.shape != (n, *dims[name]):
            raise PipelineError(f"clip {clip.clip_id}: array {name!r} has shape {data.shape}, "
                                f"expected {(n, *dims[name])}")
        arrays[name] = data
        if name not in request.audio and store.marker(clip.clip_id, mask_name(name)) is not None:
            # An imported image array lacks some frames (its source had no row there): such a
            # frame counts as one without a face.
            valid &= store.read(clip.clip_id, mask_name(name)).astype(bool).reshape(-1)
    audio = None
    if has_audio and request.audio and store.marker(clip.clip_id, AUDIO_VALID) is not None:
        # The audio track ends before the video: its frames past the end have no audio, as
        # frames of a clip without audio (zeros, audio flag off); faces are untouched.
        audio = store.read(clip.clip_id, AUDIO_VALID).astype(bool).reshape(-1)
        if audio.size != n:
            raise PipelineError(f"clip {clip.clip_id}: {audio.size} '{AUDIO_VALID}' flags for {n} frames")
        for name in request.audio:
            if name in arrays:
                arrays[name] = np.where(audio.reshape(n, *([1] * len(dims[name]))), arrays[name],
                                        np.zeros((), arrays[name].dtype))
    if train and request.purity is not None:
        window_ok = window_passes(labels, *request.purity)
    else:
        window_ok = np.ones((n, len(request.audio)), dtype=bool)
    va_labels = None
    if "va" in request.tasks:
        va = task_labels(clip, "va", train)
        va_labels = (np.full((n, len(VA_NAMES)), VA_INVALID, dtype=np.float32) if va is None
                     else va.astype(np.float32))
    return ClipArrays(clip.clip_id, labels, valid, has_audio, window_ok, arrays, series,
                      au_labels, audio, va_labels)


def concat(parts: Sequence[ClipArrays]) -> Table:
    """One :class:`Table` of the clips' rows, in order."""
    sizes = [p.labels.size for p in parts]
    names = list(parts[0].arrays) if parts else []
    return Table(
        clip_ids=tuple(p.clip_id for p in parts),
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        labels=np.concatenate([p.labels for p in parts]),
        valid=np.concatenate([p.valid for p in parts]),
        audio=np.concatenate([p.audio_rows for p in parts]),
        window_ok=np.concatenate([p.window_ok for p in parts]),
        arrays={name: np.concatenate([p.arrays[name] for p in parts]) for name in names},
        series={name: [p.series[name] for p in parts] for name in (parts[0].series if parts else ())},
        au_labels=(np.concatenate([p.au_labels for p in parts])
                   if parts and parts[0].au_labels is not None else None),
        va_labels=(np.concatenate([p.va_labels for p in parts])
                   if parts and parts[0].va_labels is not None else None),
    )


def load_table(store: FeatureStore, clips: Sequence[Clip], request: FeatureRequest,
               dims: dict[str, tuple[int, ...]], train: bool) -> Table:
    """Read whole clips into one :class:`Table`."""
    return concat([read_clip(store, clip, request, dims, train) for clip in clips])
