"""Following identities through a video: detections linked by box overlap, then each person's
face per frame.

1. :func:`link`: frame by frame, each detection joins the track whose last box (seen at most
   ``max_gap`` frames ago) overlaps it most, if that IoU is >= ``iou_min`` (greedy, best pairs
   first); others start a track. Landmarks and appearance are not used: a face that leaves the
   picture and comes back, or that jumps farther than its own size between frames, starts a
   new track.
2. :func:`people`: tracks shorter than ``min_frames`` are dropped (isolated false detections),
   then the ``n`` longest tracks (ties: larger mean face) seed one person each; every other
   track, longest first, joins the person whose frames it does not overlap in time and whose
   mean face centre is nearest (a face that left and came back). A track overlapping every
   person is someone else and is left out. Persons are returned left to right by their seed's
   mean x, so with ``n = 2`` they are ``_left`` and ``_right``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pipeline.data.faces.mtcnn import Face


@dataclass
class Track:
    frames: list[int] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)

    def add(self, frame: int, face: Face) -> None:
        self.frames.append(frame)
        self.faces.append(face)

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


def link(detections: list[list[Face]], iou_min: float = 0.3, max_gap: int = 5) -> list[Track]:
    """Tracks from per-frame detections (see the module docstring)."""
    tracks: list[Track] = []
    for frame, faces in enumerate(detections):
        live = [t for t in tracks if frame - t.frames[-1] <= max_gap + 1]
        pairs = sorted(((iou(t.faces[-1].box, f.box), ti, fi) for ti, t in enumerate(live)
                        for fi, f in enumerate(faces)), reverse=True)
        used_tracks, used_faces = set(), set()
        for overlap, ti, fi in pairs:
            if overlap < iou_min:
                break
            if ti in used_tracks or fi in used_faces:
                continue
            live[ti].add(frame, faces[fi])
            used_tracks.add(ti)
            used_faces.add(fi)
        for fi, face in enumerate(faces):
            if fi not in used_faces:
                tracks.append(Track([frame], [face]))
    return tracks


def people(tracks: list[Track], n: int = 1, min_frames: int = 3) -> list[dict[int, Face]]:
    """``n`` persons, left to right, each as frame -> face (see the module docstring)."""
    if n < 1:
        raise ValueError(f"people {n}: need at least 1")
    kept = sorted((t for t in tracks if len(t.frames) >= min_frames),
                  key=lambda t: (len(t.frames), t.mean_area()), reverse=True)
    seeds = sorted(kept[:n], key=lambda t: t.centre()[0])
    persons = [dict(zip(t.frames, t.faces)) for t in seeds]
    centres = [t.centre() for t in seeds]
    for track in kept[n:]:
        free = [p for p, person in enumerate(persons) if not person.keys() & set(track.frames)]
        if free:
            best = min(free, key=lambda p: float(np.linalg.norm(centres[p] - track.centre())))
            persons[best].update(zip(track.frames, track.faces))
    while len(persons) < n:  # fewer faces than persons: the missing ones have no frames
        persons.append({})
    return persons
