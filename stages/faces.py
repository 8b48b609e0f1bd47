"""``fer-pipeline faces``: face crops from raw videos, in the layout the dataset reader reads.

For each video (one task each, through :mod:`pipeline.parallel`'s executors, as ``extract``):

1. decode the frames in batches and run the detector on them (:mod:`pipeline.data.faces.scan`):
   the registered detector ``detector`` names (:mod:`pipeline.data.faces.detectors`: MTCNN,
   an SCRFD ONNX file, or a plug-in's). On the same pass, each frame's colour histogram (shot cuts) and each face's (appearance,
   :mod:`pipeline.data.faces.shots`). A video whose stream decodes fewer frames than its
   container declares (a truncated file, :func:`pipeline.data.media.truncation`) is skipped;
2. link the detections into tracks that never cross a cut nor a change of appearance, and pick
   each person's face per frame (:mod:`pipeline.data.faces.track`): one person (clip
   ``<video>``), two for the videos in ``two_person`` (clips ``<video>_left`` and
   ``<video>_right``, by position), or with ``all_faces`` every long enough track on its own
   (clips ``<video>_t1``, ``<video>_t2``, ...);
3. decode again and warp every chosen face onto the five-point template
   (:mod:`pipeline.data.faces.align`): ``ROOT/cropped_aligned/<clip>/00001.jpg`` for frame 0
   (1-based, as Aff-Wild2), no file where the clip has no face;
4. write ``ROOT/faces/<clip>.npz``, the clip's per-frame quality: ``face`` bool [T], ``score``
   float32 [T] (O-Net's probability, NaN without a face), ``box`` [T, 4] and ``landmarks``
   [T, 5, 2] in video pixels, ``transform`` [T, 2, 3] (video pixels -> crop pixels), ``fps``.

Everything of a video is written into ``ROOT/.faces-partial/`` first, then moved into place, then
its record ``ROOT/faces/<video>.json`` is written last (the video's absolute path, its clips,
the frames that decoded, its display rotation when it has one (frames are decoded upright:
:func:`pipeline.data.faces.video.upright`), and its track report: every track with its frames and clip, and the
cuts): a video with a record whose key matches (settings, weights, the video's size and mtime) is
complete and skipped by a rerun; any other is redone, replacing whatever an interrupted run left
of it. One run at a time per ROOT (a lock; a second is refused in one line), so the staging a
killed run left is removed when the next one starts. ``manifest ROOT`` reads the records
(:mod:`pipeline.data.raw`).
"""

from __future__ import annotations

import concurrent.futures as cf
import functools
import os
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import av
import numpy as np
from PIL import Image

from pipeline import io
from pipeline.data.clip_ids import name_problem
from pipeline.data.discover import VIDEO_SUFFIXES
from pipeline.data.faces.align import align
from pipeline.data.faces.config import FacesConfig
from pipeline.data.faces.detectors import detector_for
from pipeline.data.faces.scan import quality_arrays, scan_video
from pipeline.data.faces.track import clips
from pipeline.data.faces.video import frame_batches, video_rotation
from pipeline.data.faces.videos import find_videos, is_complete, two_person_videos, video_key
from pipeline.data.frames import frame_name
from pipeline.data.media import MediaError, probe_video, truncation, video_frames
from pipeline.data.raw import CROPS, PARTIAL, QUALITY
from pipeline.errors import PipelineError
from pipeline.locks import owner_lock
from pipeline.parallel import open_executor, parse_scheduler
from pipeline.progress import ProgressEvent, ProgressFn, silent

__all__ = ["VIDEO_SUFFIXES", "CROPS", "QUALITY", "PARTIAL", "run_faces", "process_video",
           "find_videos", "two_person_videos", "FacesResult", "VideoOutcome"]


@dataclass
class VideoOutcome:
    video: str
    status: str  # "done", "reused" or "skipped"
    clips: dict[str, int] = field(default_factory=dict)  # clip -> frames with a face
    frames: int = 0  # frames decoded (0 when reused)
    seconds: float = 0.0  # detection + alignment + writing time of this video
    reason: str = ""  # why it was skipped
    tracks: int = 0  # tracks of min_frames or more (the track report is in the video's record)
    cuts: int = 0  # shot cuts found
    left_out: int = 0  # of the tracks, those in no clip (other people, without --all-faces)


@dataclass
class FacesResult:
    out: str
    outcomes: list[VideoOutcome]
    seconds: float

    @property
    def skipped(self) -> list[VideoOutcome]:
        return [o for o in self.outcomes if o.status == "skipped"]

    @property
    def frames(self) -> int:
        return sum(o.frames for o in self.outcomes)

    @property
    def frames_per_second(self) -> float:
        busy = sum(o.seconds for o in self.outcomes)
        return self.frames / busy if busy > 0 else 0.0


def process_video(video: str, out: str, config: FacesConfig,
                  relay: Callable[..., None] | None = None) -> VideoOutcome:
    """One video, start to record; bad media becomes a ``skipped`` outcome. ``relay(video,
    frames)`` is called as frames are scanned (progress, possibly from another process)."""
    video_path, root = Path(os.path.abspath(video)), Path(out)
    problem = name_problem(video_path.stem)  # the stem names the clip's folders: one safe component
    if problem is not None:
        return VideoOutcome(video_path.name, "skipped",
                            reason=f"{video}: clip name {video_path.stem[:80]!r} {problem}: rename the "
                                   "file (clips are named by the video's file name)")
    if is_complete(root, video_path, config):
        return VideoOutcome(video_path.stem, "reused")
    started = time.perf_counter()
    names = [video_path.stem]
    (root / PARTIAL).mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{video_path.stem}-", dir=root / PARTIAL))
    try:
        scan = scan_video(video_path, config, None if relay is None
                          else functools.partial(relay, str(video_path)))
        n = scan.frames
        truncated = truncation(video_frames(video_path)[0], n) if n else "no frame decodes"
        if truncated is not None:
            raise MediaError(f"{video_path}: {truncated}")
        names, persons, tracks = clips(video_path.stem, scan.detections, scan.cuts,
                                       scan.signatures, config)
        transforms: list[dict[int, np.ndarray]] = [{} for _ in names]
        for name in names:
            (staging / name).mkdir()
        index = 0
        for batch in frame_batches(video_path, config.batch):
            for frame in batch:
                for p, (name, person) in enumerate(zip(names, persons)):
                    if index in person:
                        crop, transforms[p][index] = align(frame, person[index].landmarks,
                                                           config.size, config.scale, config.pad)
                        Image.fromarray(crop).save(staging / name / frame_name(index),
                                                   quality=config.jpeg_quality)
                index += 1
        if index != n:
            raise MediaError(f"{video_path}: {n} frames decoded, then {index} on a second pass")
        fps = probe_video(video_path).fps
        for name, person, transform in zip(names, persons, transforms):
            io.save_npz(staging / f"{name}.npz", **quality_arrays(person, transform, n, fps))
        _publish(root, staging, names)
        record = {"video": str(video_path), "clips": names, "frames": n,
                  "faces": {name: len(p) for name, p in zip(names, persons)},
                  "tracks": tracks, "cuts": scan.cuts, "key": video_key(video_path, config)}
        rotation = video_rotation(video_path)
        if rotation:  # only then: records of unrotated videos stay as they were
            record["rotation"] = rotation  # degrees counterclockwise, applied before detection
        io.write_json(root / QUALITY / f"{video_path.stem}.json", record)
    except MediaError as e:
        return VideoOutcome(video_path.stem, "skipped", reason=str(e))
    except OSError as e:  # a full disk is one line naming where; anything else is a bug
        full = io.no_space(staging / names[0], e)
        if full is not None:
            raise full from None
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return VideoOutcome(video_path.stem, "done", dict(record["faces"]), n,
                        time.perf_counter() - started, tracks=len(tracks), cuts=len(scan.cuts),
                        left_out=sum(t["clip"] is None for t in tracks))


def _publish(root: Path, staging: Path, names: list[str]) -> None:
    """Move a video's clip folders and quality files from ``staging`` into place."""
    (root / CROPS).mkdir(parents=True, exist_ok=True)
    (root / QUALITY).mkdir(parents=True, exist_ok=True)
    for name in names:
        target = root / CROPS / name
        if target.exists():  # left by an interrupted or older run: set it aside, then delete it
            old = staging / f".old-{name}"
            os.replace(target, old)
            shutil.rmtree(old)
        os.replace(staging / name, target)
        os.replace(staging / f"{name}.npz", root / QUALITY / f"{name}.npz")


class _Frames:
    """Progress per frame: the ``frames`` bar moves as videos are scanned (relayed from workers),
    each video's outcome completes its share."""

    def __init__(self, progress: ProgressFn, total: int, videos: int) -> None:
        self.progress, self.videos = progress, videos
        self.shown: dict[str, int] = {}
        self.done: set[str] = set()
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        self.frames = 0
        progress(ProgressEvent("frames", total=total))

    def _info(self) -> dict:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        return {"videos": f"{len(self.done)}/{self.videos}", "frames/s": self.frames / elapsed}

    def scanned(self, video: str, frames: int) -> None:
        with self.lock:
            if video in self.done or frames <= self.shown.get(video, 0):
                return
            advance = frames - self.shown.get(video, 0)
            self.shown[video], self.frames = frames, self.frames + advance
            self.progress(ProgressEvent("frames", advance=advance, info=self._info()))

    def finished(self, video: str, declared: int) -> None:
        with self.lock:
            self.done.add(video)
            advance = max(0, declared - self.shown.get(video, 0))
            self.frames += advance
            self.progress(ProgressEvent("frames", advance=advance, info=self._info()))


def _declared(video: Path) -> int:
    """The progress bar's share of a video: its declared frames, else duration x frame rate,
    from the header only (counting packets would read every file before any work starts)."""
    try:
        with av.open(str(video)) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            seconds = float(stream.duration * stream.time_base) if stream.duration else (
                container.duration or 0) / av.time_base
            return int(round(seconds * float(stream.average_rate or stream.guessed_rate or 0)))
    except (av.error.FFmpegError, OSError, ValueError, IndexError, TypeError, ZeroDivisionError):
        return 0


def run_faces(videos: list[str | Path], out: str | Path, config: FacesConfig,
              progress: ProgressFn = silent) -> FacesResult:
    """Crops and quality files of every video not complete already under ``out``."""
    started = time.perf_counter()
    parse_scheduler(config.scheduler)
    files = find_videos(videos)
    unknown = set(config.two_person) - {v.stem for v in files}
    if unknown:
        raise PipelineError(f"two_person names {', '.join(sorted(unknown))}: not among the videos")
    detector_for(config)  # missing or altered weights, or a bad ONNX file: fail now, in one line
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    outcomes = []
    with owner_lock(out / ".faces-run", f"faces output {out}"):
        # Ours alone now: what is staged was left by a killed run.
        shutil.rmtree(out / PARTIAL, ignore_errors=True)
        declared = {str(Path(os.path.abspath(v))): _declared(v) for v in files}
        frames = _Frames(progress, sum(declared.values()), len(files))
        with open_executor(config.scheduler, on_message=frames.scanned) as workers:
            futures = {workers.executor.submit(process_video, str(v), str(out), config,
                                               workers.relay): str(Path(os.path.abspath(v)))
                       for v in files}
            try:
                for future in cf.as_completed(futures):
                    outcome = future.result()
                    outcomes.append(outcome)
                    frames.finished(futures[future], declared[futures[future]])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
    outcomes.sort(key=lambda o: o.video)
    return FacesResult(str(out), outcomes, time.perf_counter() - started)
