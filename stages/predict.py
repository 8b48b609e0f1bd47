"""Stage four, applied: ``fer-pipeline predict INPUTS --pipeline PIPELINE --out DIR``, and the notebook API.

Chains, for new unlabelled videos:

1. **faces**: raw videos go through :func:`stages.faces.run_faces` (its public entry point only)
   with the bundle's face settings (the defaults when the training crops were not made by
   ``faces``); folders of crops (``00001.jpg``, ...) are taken as they are, each one clip, with
   audio and frame rate from ``--videos DIR/<clip>.mp4`` (or ``<video>`` for ``<video>_left``)
   when given, else no audio and ``--fps``;
2. **extract** (:func:`stages.extract.run_extract`) with the bundle's extractors, weights and
   settings into ``DIR/.work/features.zarr`` (or ``--store``, whose cache is reused); the cache
   keys must equal the bundle's, or the features would not be the ones the heads learnt on;
3. **heads** and 4. **decisions** (:class:`pipeline.bundle.decide.Bundle`).

Output per clip: ``DIR/<clip>.csv`` and ``DIR/<clip>.parquet`` (one row per frame: frame, time,
face, box and detection score where the face step ran, the 8 class probabilities, label and
expression, the faceless-frame rule, AU probabilities with AU heads), and ``DIR/<clip>.json``, the
summary (class shares, segments), written last: a clip whose summary names this bundle's
manifest digest is complete and skipped by a rerun (resumable per video). Every file is written
aside and renamed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline import io
from pipeline.bundle.decide import Bundle, frame_table, summary
from pipeline.bundle.format import MANIFEST, BundleError
from pipeline.data.faces.config import FacesConfig
from pipeline.data.manifest import Clip, write_manifest
from pipeline.data.media import probe_video, variable_rate
from pipeline.errors import PipelineError
from pipeline.features.config import ExtractConfig
from pipeline.features.store import FeatureStore
from pipeline.progress import ProgressEvent, ProgressFn, silent
from stages.extract import run_extract
from stages.faces import VIDEO_SUFFIXES, find_videos, run_faces

WORK = ".work"


@dataclass
class PredictResult:
    out: Path
    clips: list[str] = field(default_factory=list)  # every clip, in order
    reused: list[str] = field(default_factory=list)  # complete from an earlier run
    frames: int = 0  # frames predicted by this run
    faces: int = 0  # of those, frames with a face
    seconds: float = 0.0
    extract_seconds: float = 0.0
    random_backbones: list[str] = field(default_factory=list)
    # One line per clip whose audio track ends before its video or starts after it ("<clip>:
    # <path>: audio ends at ..."): its faces are all predicted, its frames without audio masked.
    notes: list[str] = field(default_factory=list)
    # One line per video of a variable frame rate whose frames stray more than a frame from
    # their times at its average rate ("<clip>: <path>: variable frame rate: ...").
    timing: list[str] = field(default_factory=list)


def _is_crops(path: Path) -> bool:
    """A folder of face crops: it has some, or it is empty (a clip with no face at all)."""
    return path.is_dir() and (any(path.glob("[0-9]*.jpg")) or not any(path.iterdir()))


def video_for(clip_id: str, videos: Path | None) -> Path | None:
    """The video of a crop folder in ``videos``: ``<clip>.*``, or ``<video>.*`` for the
    ``<video>_left`` / ``<video>_right`` sides of a two-person video (as Aff-Wild2 names them)."""
    if videos is None:
        return None
    stems = [clip_id, clip_id.rsplit("_", 1)[0]] if clip_id.endswith(("_left", "_right")) else [clip_id]
    for stem in stems:
        for suffix in VIDEO_SUFFIXES:
            if (videos / f"{stem}{suffix}").is_file():
                return videos / f"{stem}{suffix}"
    return None


def crop_clip(clip_id: str, frames_dir: Path, video: Path | None, fps: float) -> Clip:
    """A crop folder as a test clip: frame count, fps and audio from its video when there is
    one (as the manifest reader does), else its highest frame number, ``fps`` and no audio."""
    if video is not None:
        info = probe_video(video)
        return Clip(clip_id, "test", video.stem, info.n_frames, info.fps, str(frames_dir.resolve()),
                    str(video.resolve()), str(video.resolve()) if info.has_audio else None, None)
    numbers = [int(p.stem) for p in frames_dir.glob("*.jpg") if p.stem.isdigit()]
    if not numbers:
        raise PipelineError(f"{frames_dir}: no face crops (00001.jpg, ...)")
    return Clip(clip_id, "test", clip_id, max(numbers), fps, str(frames_dir.resolve()), None, None,
                None)


def faces_config(bundle: Bundle, scheduler: str) -> FacesConfig:
    """The face step the bundle was trained with (its defaults where the crops were not made by
    ``faces``)."""
    settings = dict((bundle.record.get("faces") or {}).get("settings") or {})
    if "cut_threshold" in settings and "cut_spike" not in settings:
        settings["cut_spike"] = 1.0  # crops made before the spike rule: the threshold alone
    names = {f.name for f in dataclasses.fields(FacesConfig)}
    return FacesConfig(**{k: v for k, v in settings.items() if k in names}, scheduler=scheduler)


def extract_config(bundle: Bundle, scheduler: str) -> ExtractConfig:
    extractors = bundle.record["extractors"]
    settings = bundle.record.get("extract") or {}
    precisions = {e["precision"] for e in extractors.values()}
    return ExtractConfig(
        extractors=list(extractors),
        configs={n: e["config"] for n, e in extractors.items()},
        weights={n: str(bundle.root / e["weights"]) for n, e in extractors.items() if e["weights"]},
        seed=int(settings.get("seed", 0)),
        precision=precisions.pop() if len(precisions) == 1 else "auto",
        batch_size=int(settings.get("batch_size", 32)),
        audio_stride=int(settings.get("audio_stride", 1)),
        scheduler=scheduler, splits=["test"])


def _gather(inputs: Sequence[str | Path], work: Path, bundle: Bundle, videos: Path | None,
            fps: float, scheduler: str,
            progress: ProgressFn) -> tuple[list[Clip], dict[str, Path], dict[str, str]]:
    """The clips to predict, where the face step's per-frame records are, and a line per raw
    video whose variable frame rate puts frames more than a frame off their timestamps."""
    crops, raw = [], []
    for path in map(Path, inputs):
        if _is_crops(path):
            crops.append(path)
        elif path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES or path.is_dir():
            raw.append(path)
        else:
            raise PipelineError(f"{path}: not a video ({', '.join(VIDEO_SUFFIXES)}), a folder of"
                                " videos, or a folder of face crops")
    clips = [crop_clip(p.name, p, video_for(p.name, videos), fps) for p in crops]
    quality: dict[str, Path] = {}
    timing: dict[str, str] = {}
    if raw:
        # Coupled to the faces stage only through its entry point and its output layout
        # (cropped_aligned/<clip>/, faces/<clip>.npz), not its records.
        root = work / "faces"
        result = run_faces(raw, root, faces_config(bundle, scheduler), progress)
        for outcome in result.outcomes:
            if outcome.status == "skipped":
                raise PipelineError(f"{outcome.video}: {outcome.reason}")
        for video in find_videos(raw):
            info = probe_video(video, timed=True)
            if info.drift > 1 / info.fps:
                timing[video.stem] = variable_rate(video, info)
            crops = root / "cropped_aligned" / video.stem
            clips.append(Clip(video.stem, "test", video.stem, info.n_frames, info.fps,
                              str(crops.resolve()), str(video.resolve()),
                              str(video.resolve()) if info.has_audio else None, None))
            quality[video.stem] = root / "faces" / f"{video.stem}.npz"
    ids = [c.clip_id for c in clips]
    if len(set(ids)) != len(ids):
        raise PipelineError(f"two inputs give the clip {next(i for i in ids if ids.count(i) > 1)!r}")
    return clips, quality, timing


def _boxes(path: Path | None, n: int) -> dict | None:
    """The face step's box and detection score per frame, when it ran and recorded them."""
    if path is None or not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        if "box" not in data or "score" not in data or len(data["box"]) != n:
            return None
        return {"box": data["box"], "score": data["score"]}


def _digest(bundle: Bundle) -> str:
    return hashlib.sha256((bundle.root / MANIFEST).read_bytes()).hexdigest()


def _complete(out: Path, clip: Clip, digest: str) -> bool:
    try:
        record = json.loads((out / f"{clip.clip_id}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (record.get("pipeline_digest") == digest and record.get("frames") == clip.n_frames
            and (out / f"{clip.clip_id}.csv").is_file() and (out / f"{clip.clip_id}.parquet").is_file())


def write_tables(out: Path, clip_id: str, columns: dict) -> None:
    """One clip's table as CSV and Parquet, each written aside and renamed."""
    import pandas as pd

    frame = pd.DataFrame(columns)
    with io.atomic_path(out / f"{clip_id}.csv") as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    with io.atomic_path(out / f"{clip_id}.parquet") as tmp:
        frame.to_parquet(tmp, index=False)


def run_predict(inputs: Sequence[str | Path], pipeline: str | Path, out: str | Path,
                store: str | Path | None = None, videos: str | Path | None = None,
                fps: float = 25.0, scheduler: str = "inprocess",
                progress: ProgressFn = silent) -> PredictResult:
    """Predict every frame of every input with the bundle ``pipeline``; tables into ``out``."""
    import time

    started = time.perf_counter()
    bundle = Bundle(pipeline)
    out = Path(out)
    if out.is_symlink():
        raise PipelineError(f"{out}: a symbolic link; give a plain folder")
    work = out / WORK
    work.mkdir(parents=True, exist_ok=True)
    clips, quality, timing = _gather(inputs, work, bundle, Path(videos) if videos else None, fps,
                                     scheduler, progress)
    result = PredictResult(out, [c.clip_id for c in clips],
                           random_backbones=bundle.random_backbones,
                           timing=[f"{clip}: {line}" for clip, line in timing.items()])
    digest = _digest(bundle)
    todo = [c for c in clips if not _complete(out, c, digest)]
    result.reused = [c.clip_id for c in clips if c.clip_id not in {t.clip_id for t in todo}]
    if not todo:
        result.seconds = time.perf_counter() - started
        return result
    manifests = work / "manifests"
    write_manifest(manifests / "test.jsonl", todo)
    store_path = Path(store) if store else work / "features.zarr"
    extracted = run_extract(extract_config(bundle, scheduler), manifests, store_path, progress)
    result.extract_seconds = extracted.seconds
    if extracted.skipped:
        raise PipelineError(str(extracted.skipped[0]))
    result.notes = list(extracted.notes)
    audio_notes = {note.split(": ", 1)[0]: note.split(": ", 1)[1] for note in extracted.notes}
    for name, key in extracted.extractors.items():
        if key != bundle.record["extractors"][name]["cache_key"]:
            raise BundleError(f"{bundle.root}: extractor {name} computes cache key {key} here, the"
                              f" heads were trained on {bundle.record['extractors'][name]['cache_key']}"
                              " (another weights file, config or precision)")
    progress(ProgressEvent("predict frames", total=sum(c.n_frames for c in todo)))
    for clip, members, face, aus, vas in bundle.clip_outputs(FeatureStore(store_path), todo):
        probs, labels = bundle.decide(clip.clip_id, members, face)
        columns = frame_table(clip, probs, labels, face, bundle.faceless_rules(face), aus,
                              _boxes(quality.get(clip.clip_id), clip.n_frames), vas)
        write_tables(out, clip.clip_id, columns)
        record = {**summary(clip, labels, face), "pipeline": str(bundle.root.resolve()),
                  "pipeline_digest": digest, "random_backbones": bundle.random_backbones}
        if clip.clip_id in audio_notes:  # only then: other clips' records stay as they were
            record["audio"] = audio_notes[clip.clip_id]
        if clip.clip_id in timing:  # the same: only then
            record["timing"] = timing[clip.clip_id]
        io.write_json(out / f"{clip.clip_id}.json", record)  # last: the clip is complete
        result.frames += clip.n_frames
        result.faces += int(np.count_nonzero(face))
        progress(ProgressEvent("predict frames", advance=clip.n_frames))
    result.seconds = time.perf_counter() - started
    return result


class Pipeline:
    """The notebook API: ``Pipeline.load("PIPELINE").predict("video.mp4")`` -> a pandas DataFrame
    (one row per frame; a ``clip`` column first when the input gives several clips)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.bundle = Bundle(path)  # verified now: a bad bundle fails at load, not at predict

    @classmethod
    def load(cls, path: str | Path) -> "Pipeline":
        return cls(path)

    def predict(self, source: str | Path, out: str | Path | None = None, **options):
        """Per-frame predictions of a video (or crop folder); ``out`` keeps the tables and the
        feature cache (a temporary folder otherwise); ``options`` as :func:`run_predict`."""
        import tempfile

        import pandas as pd

        with tempfile.TemporaryDirectory(prefix="fer-predict-") as scratch:
            target = Path(out) if out else Path(scratch)
            result = run_predict([source], self.path, target, **options)
            frames = []
            for clip_id in result.clips:
                frame = pd.read_parquet(target / f"{clip_id}.parquet")
                frame.insert(0, "clip", clip_id)
                frames.append(frame)
        table = pd.concat(frames, ignore_index=True)
        return table.drop(columns="clip") if len(result.clips) == 1 else table
