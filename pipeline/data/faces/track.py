"""Following identities through a video: detections linked by box overlap, appearance and shot,
then each person's face per frame.

1. :func:`link`: frame by frame, each detection joins the track whose last box (seen at most
   ``max_gap`` frames ago) overlaps it most, if that IoU is >= ``iou_min`` (greedy, best pairs
   first) and, given signatures, its colour signature is within ``appearance_max`` of the
   track's (:mod:`pipeline.data.faces.shots`); others start a track. No track continues across
   a shot cut. A face that leaves the picture and comes back, or that jumps farther than its
   own size between frames, starts a new track.
2. :func:`people`: tracks shorter than ``min_frames`` are dropped (isolated false detections),
   then the ``n`` longest tracks (ties: larger mean face) seed one person each; every other
   track, longest first, joins the person whose frames it does not overlap in time, whose
   signature (given signatures) is within ``appearance_max`` of the seed's, and whose mean face
   centre is nearest (a face that left and came back, or the same person in the next shot). A
   track overlapping every person, or looking like none of them, is someone else and is left
   out (:func:`people` returns what it left out, for the track report). Persons are returned
   left to right by their seed's mean x, so with ``n = 2`` they are ``_left`` and ``_right``.
3. :func:`long_tracks`: for ``--all-faces``, every track of ``min_frames`` or more on its own,
   in order of first frame (then left to right).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

import numpy as np

from pipeline.data.faces.common import Face
from pipeline.data.faces.shots import distance


@dataclass
class Track:
    frames: list[int] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    signature: np.ndarray | None = None  # running mean of the faces' colour histograms

    def add(self, frame: int, face: Face, signature: np.ndarray | None = None) -> None:
        self.frames.append(frame)
        self.faces.append(face)
        if signature is not None:
            k = len(self.frames)
            self.signature = (signature if self.signature is None
                              else self.signature + (signature - self.signature) / k)

    def centre(self) -> np.ndarray:
        boxes = np.stack([f.box for f in self.faces])
        return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1).mean(0)

    def mean_area(self) -> float:
        return float(np.mean([f.area for f in self.faces]))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return float(w * h / union) if union > 0 else 0.0


def link(detections: list[list[Face]], iou_min: float = 0.3, max_gap: int = 5,
         cuts: Iterable[int] = (), signatures: list[list[np.ndarray]] | None = None,
         appearance_max: float = 1.0) -> list[Track]:
    """Tracks from per-frame detections (see the module docstring); ``cuts``: frames that start
    a shot; ``signatures``: each detection's colour histogram (parallel to ``detections``)."""
    tracks: list[Track] = []
    cut = set(cuts)
    shot_start = 0
    for frame, faces in enumerate(detections):
        if frame in cut:
            shot_start = frame
        signs = signatures[frame] if signatures is not None else [None] * len(faces)
        live = [t for t in tracks if frame - t.frames[-1] <= max_gap + 1 and t.frames[-1] >= shot_start]
        pairs = sorted(((iou(t.faces[-1].box, f.box), ti, fi) for ti, t in enumerate(live)
                        for fi, f in enumerate(faces)), reverse=True)
        used_tracks, used_faces = set(), set()
        for overlap, ti, fi in pairs:
            if overlap < iou_min:
                break
            if ti in used_tracks or fi in used_faces:
                continue
            track = live[ti]
            if (signs[fi] is not None and track.signature is not None
                    and distance(track.signature, signs[fi]) > appearance_max):
                continue  # another face where this one was
            track.add(frame, faces[fi], signs[fi])
            used_tracks.add(ti)
            used_faces.add(fi)
        for fi, face in enumerate(faces):
            if fi not in used_faces:
                tracks.append(Track())
                tracks[-1].add(frame, face, signs[fi])
    return tracks


def people(tracks: list[Track], n: int = 1, min_frames: int = 3, appearance_max: float = 1.0,
           left_out: list[Track] | None = None) -> list[dict[int, Face]]:
    """``n`` persons, left to right, each as frame -> face (see the module docstring); the kept
    tracks that joined no person are appended to ``left_out`` when it is given."""
    if n < 1:
        raise ValueError(f"people {n}: need at least 1")
    kept = sorted((t for t in tracks if len(t.frames) >= min_frames),
                  key=lambda t: (len(t.frames), t.mean_area()), reverse=True)
    seeds = sorted(kept[:n], key=lambda t: t.centre()[0])
    persons = [dict(zip(t.frames, t.faces)) for t in seeds]
    centres = [t.centre() for t in seeds]
    for track in kept[n:]:
        free = [p for p, person in enumerate(persons) if not person.keys() & set(track.frames)
                and (track.signature is None or seeds[p].signature is None
                     or distance(track.signature, seeds[p].signature) <= appearance_max)]
        if free:
            best = min(free, key=lambda p: float(np.linalg.norm(centres[p] - track.centre())))
            persons[best].update(zip(track.frames, track.faces))
        elif left_out is not None:
            left_out.append(track)
    while len(persons) < n:  # fewer faces than persons: the missing ones have no frames
        persons.append({})
    return persons


def long_tracks(tracks: list[Track], min_frames: int = 3) -> list[Track]:
    """Every track of at least ``min_frames`` frames, by first frame, then left to right."""
    return sorted((t for t in tracks if len(t.frames) >= min_frames),
                  key=lambda t: (t.frames[0], float(t.centre()[0])))


def clips(stem: str, detections: list[list[Face]], cuts: list[int],
          signatures: list[list[np.ndarray]], config) -> tuple[list[str], list[dict[int, Face]], list[dict]]:
    """A video's clip names, each clip's frame -> face, and its track report (every track of
    ``config.min_frames`` or more: frames, first and last frame, the clip it went to or None),
    by ``config`` (a FacesConfig): one person, ``<stem>_left``/``_right`` for a video in
    ``two_person``, or with ``all_faces`` every kept track as ``<stem>_t<k>``."""
    tracks = link(detections, config.iou_min, config.max_gap, cuts, signatures,
                  config.appearance_max)
    kept = long_tracks(tracks, config.min_frames)
    clip_of: dict[int, str] = {}
    if stem in config.two_person or not config.all_faces:
        names = [f"{stem}_left", f"{stem}_right"] if stem in config.two_person else [stem]
        left_out: list[Track] = []
        persons = people(tracks, len(names), config.min_frames, config.appearance_max, left_out)
        out = {id(t) for t in left_out}
        for track in kept:  # which person each kept track became (by its first frame's face)
            if id(track) not in out:
                for name, person in zip(names, persons):
                    if person.get(track.frames[0]) is track.faces[0]:
                        clip_of[id(track)] = name
    else:
        names = [f"{stem}_t{k}" for k in range(1, len(kept) + 1)]
        persons = [dict(zip(t.frames, t.faces)) for t in kept]
        clip_of = {id(t): name for t, name in zip(kept, names)}
    report = [{"track": k, "frames": len(t.frames), "first": t.frames[0], "last": t.frames[-1],
               "clip": clip_of.get(id(t))} for k, t in enumerate(kept, 1)]
    return names, persons, report
