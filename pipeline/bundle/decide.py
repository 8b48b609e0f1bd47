"""A loaded bundle: its member heads on a store, the ensemble's fitted decisions, the per-frame table.

:class:`Bundle` is what ``predict`` holds after :func:`pipeline.bundle.format.open_bundle`
verified the folder: :meth:`Bundle.clip_outputs` runs every member head over a store's clips
(:mod:`pipeline.bundle.heads`), :meth:`Bundle.decide` applies the decisions stage three fitted
(:func:`pipeline.scoring.fitting.predict_probs` and :func:`~pipeline.scoring.fitting.predict`,
the very functions that wrote ``final_test.npz`` and ``submission.txt``), and :func:`frame_table`
lays one video's result out as columns. Which rule gave a frame without a face
(:func:`faceless_rules`): ``nearest_face`` (the ensemble's fill step, or face heads' own
nearest-face rule when no member sees audio), ``audio`` (a member with weight reads audio there
and the ensemble does not fill), ``no_face_in_video`` (no frame of the video has a face: the
heads' raw output), empty for frames with a face.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from pipeline.bundle.format import BundleError, open_bundle
from pipeline.bundle.heads import MemberHead, load_head, predict_clips
from pipeline.bundle.va import check_va_decisions, combine_va
from pipeline.data.labels import AU_NAMES, CLASSES, VA_NAMES
from pipeline.data.manifest import Clip
from pipeline.features.store import FeatureStore
from pipeline.scoring.combiners import Combination
from pipeline.scoring.fitting import Choices, predict, predict_probs
from pipeline.scoring.frames import SplitData


def choices_of(decisions: dict) -> Choices:
    """The fitted :class:`Choices` recorded in ``bundle.json``."""
    return Choices(Combination(decisions["combiner"], decisions["rule"],
                               tuple(float(w) for w in decisions["weights"]),
                               decisions.get("params") or {}),
                   decisions["fill"], decisions["smooth"], int(decisions["window"]),
                   tuple(float(b) for b in decisions["bias"]), tuple(decisions["steps"]),
                   decisions.get("fallback_threshold"))


class Bundle:
    """A verified pipeline folder; heads are built on first use."""

    def __init__(self, path: str | Path) -> None:
        self.root, self.record = open_bundle(path)
        if list(self.record["classes"]) != list(CLASSES):
            raise BundleError(f"{self.root}: classes {self.record['classes']} are not this"
                              f" version's {list(CLASSES)}")
        self.members: list[str] = list(self.record["members"])
        self.choices = choices_of(self.record["decisions"])
        self.va_decisions: dict | None = self.record.get("va_decisions")  # None: equal mean
        if self.va_decisions is not None:
            check_va_decisions(self.va_decisions, len(self.record.get("va_heads", [])),
                               str(self.root / "bundle.json"))
        self._heads: dict[str, MemberHead] | None = None

    @property
    def random_backbones(self) -> list[str]:
        return list(self.record["card"]["random_backbones"])

    def heads(self) -> dict[str, MemberHead]:
        if self._heads is None:
            self._heads = {run: load_head(self.root / info["folder"], run)
                           for run, info in self.record["heads"].items()}
        return self._heads

    def clip_outputs(self, store: FeatureStore, clips: Sequence[Clip]
                     ) -> Iterator[tuple[Clip, np.ndarray, np.ndarray, np.ndarray | None,
                                         np.ndarray | None]]:
        """(clip, members' probabilities [M, T, 8], face [T], AU probabilities [T, 12] or None,
        valence-arousal [T, 2] or None: the VA heads combined as stage three fitted, or their
        mean in bundles without ``va_decisions``, :func:`pipeline.bundle.va.combine_va`) per
        clip, in order. The heads run clip group by clip group in lockstep, so memory holds a
        few clips whatever their number."""
        heads = self.heads()
        streams = {run: predict_clips(member, store, clips) for run, member in heads.items()}
        au = [name.split("/") for name in self.record.get("au_heads", [])]
        va = [name.split("/") for name in self.record.get("va_heads", [])]
        for clip in clips:
            outputs, face = {}, None
            for run, stream in streams.items():
                clip_id, probs, valid = next(stream)
                assert clip_id == clip.clip_id, (clip_id, clip.clip_id)
                outputs[run] = probs
                face = valid if face is None else face
            members = np.stack([outputs[m.split("/")[0]][m.split("/")[1]] for m in self.members])
            aus = (np.mean([outputs[r][o] for r, o in au], axis=0).astype(np.float32)
                   if au else None)
            vas = (combine_va(np.stack([outputs[r][o] for r, o in va]), self.va_decisions)
                   if va else None)
            yield clip, members, face, aus, vas

    def decide(self, clip_id: str, members: np.ndarray, face: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """(final probabilities [T, 8], labels [T]) of one clip under the fitted decisions."""
        data = SplitData((clip_id,), (clip_id,), np.array([0, members.shape[1]]),
                         members.astype(np.float32), None, np.asarray(face, dtype=bool))
        return predict_probs(data, self.choices), predict(data, self.choices)

    def faceless_rules(self, face: np.ndarray) -> np.ndarray:
        """Per frame, the rule that decided a frame without a face ("" for face frames)."""
        return faceless_rules(face, self.choices, self.members,
                              self.record.get("face_members", self.members))


def faceless_rules(face: np.ndarray, choices: Choices, members: Sequence[str],
                   face_members: Sequence[str]) -> np.ndarray:
    """Per frame, the rule that decided a frame without a face ("" for face frames): the fill
    step, else a weighted member that reads audio there, else the face heads' nearest face."""
    face = np.asarray(face, dtype=bool)
    rules = np.full(face.shape, "", dtype=object)
    if face.all():
        return rules
    if not face.any():
        rules[:] = "no_face_in_video"
        return rules
    filled = "fill" in choices.steps and choices.fill == "nearest"
    audio = any(w > 0 and m not in set(face_members)
                for m, w in zip(members, choices.combination.weights))
    rules[~face] = "audio" if audio and not filled else "nearest_face"
    return rules


def frame_table(clip: Clip, probs: np.ndarray, labels: np.ndarray, face: np.ndarray,
                rules: np.ndarray, aus: np.ndarray | None, boxes: dict | None,
                va: np.ndarray | None = None) -> dict:
    """The columns of one video's table (``boxes``: ``box`` [T, 4] and ``score`` [T] of the face
    step where it ran, else None: the columns are left empty)."""
    n = clip.n_frames
    index = np.arange(n)
    columns: dict = {"frame": index + 1, "time": index / clip.fps, "face": face.astype(bool)}
    box = boxes["box"] if boxes else np.full((n, 4), np.nan, np.float32)
    score = boxes["score"] if boxes else np.full(n, np.nan, np.float32)
    for k, name in enumerate(("box_x1", "box_y1", "box_x2", "box_y2")):
        columns[name] = np.asarray(box[:, k], dtype=np.float32)
    columns["detection_score"] = np.asarray(score, dtype=np.float32)
    for k, name in enumerate(CLASSES):
        columns[name] = probs[:, k]
    columns["label"] = labels.astype(np.int16)
    columns["expression"] = np.asarray(CLASSES, dtype=object)[labels]
    columns["faceless_rule"] = rules
    if aus is not None:
        for k, name in enumerate(AU_NAMES):
            columns[name] = aus[:, k]
    if va is not None:  # bundles with VA heads: valence and arousal in [-1, 1]
        for k, name in enumerate(VA_NAMES):
            columns[name] = va[:, k]
    return columns


def summary(clip: Clip, labels: np.ndarray, face: np.ndarray) -> dict:
    """Class shares and segments (runs of one label) of a video."""
    counts = np.bincount(labels.astype(np.int64), minlength=len(CLASSES))
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change]) if len(labels) else np.array([], dtype=np.int64)
    ends = np.concatenate([change, [len(labels)]]) if len(labels) else starts
    return {
        "clip": clip.clip_id, "frames": int(clip.n_frames), "fps": clip.fps,
        "frames_with_face": int(np.count_nonzero(face)),
        "shares": {name: float(c / max(len(labels), 1)) for name, c in zip(CLASSES, counts)},
        "segments": [{"expression": CLASSES[int(labels[s])], "first_frame": int(s) + 1,
                      "last_frame": int(e), "start": float(s / clip.fps),
                      "end": float(e / clip.fps)} for s, e in zip(starts, ends)],
    }
