"""Stage one (``fer-pipeline extract``): frozen extractors over every clip, cached in the feature store.

The stage is resumable, exact and parallel:

1. **Plan** (:mod:`pipeline.features.plan`, in the caller's process). For every clip of the
   manifests and every extractor, the store is asked whether the extractor's arrays are complete
   with the extractor's current cache key, with every chunk file they were written with (a few
   metadata reads and ``stat`` calls per array; ``verify_existing`` re-hashes every byte instead).
   What is complete is reused; nothing else counts. Damage the plan cannot see (changed bytes)
   is caught when the array is read, and then noted so that the next run recomputes it. With
   nothing to compute the stage returns without starting workers or building a model.
2. **Shards.** The clips with work are cut into shards of about ``shard_frames`` frames and handed
   to the executor that ``scheduler`` names (:mod:`pipeline.parallel`): in-process, a process
   pool, a dask ``LocalCluster`` or a running dask scheduler. One task per shard
   (:mod:`stages.extract_shards` cuts, submits and tallies them).
3. **Workers** (:mod:`pipeline.features.runner`). Each takes a clip's lock, re-checks it, decodes
   frames and audio in loader threads, runs the models on batches that span clip boundaries,
   and writes each clip's arrays in a writer thread, its ``valid`` array last. A clip that another
   process holds is left and retried at the end, waiting for the lock this time.
4. **Report.** Counts, skipped clips with their file and reason, frames/s and which extractors ran
   on random weights go to the returned :class:`ExtractResult` and to
   ``STORE.meta/reports/extract-<UTC time>.json`` (beside the store: not part of the Zarr tree;
   not written where the store is read-only).

An existing store is planned read-only: with nothing to compute no lock is taken and nothing is
written (a complete store on a read-only mount works). Arrays are written aside and renamed into
place, so correctness does not depend on locks (:mod:`pipeline.features.store`). A damaged or
missing root ``zarr.json`` is rebuilt first, from the run reports and these manifests, where
every piece of it can be found again (:mod:`pipeline.features.store_root` says which cannot).

A kill at any moment (SIGKILL included) leaves every array either complete (marker written after
its data) or incomplete, and a rerun computes exactly the incomplete ones. Every forward runs on a
full ``batch_size`` batch (a short last batch is padded), so a frame's features do not depend on
which other frames shared its batch: a resumed or sharded run stores the same bytes as a single
uninterrupted one.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pipeline import config as config_io
from pipeline.data.manifest import Clip, feature_digest, load_clips
from pipeline.errors import PipelineError
from pipeline.features.config import ExtractConfig, resolve_precision
from pipeline.features.extractors.base import Extractor
from pipeline.features.plan import ClipJob, array_keys, build_extractors, plan_clip, resolve_device
from pipeline.features.runner import ShardTask
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import StoreError
from pipeline.features.store_meta import consolidate, is_consolidated, unconsolidate
from pipeline.features.store_root import rebuild_root, root_damage
from pipeline.parallel import open_executor, parse_scheduler
from pipeline.progress import ProgressEvent, ProgressFn, silent
from stages.extract_shards import Tally, run_shards, shards

__all__ = ["ExtractResult", "Skip", "run_extract"]


@dataclass(frozen=True)
class Skip:
    """A clip left out of this run: nothing of it was marked complete."""

    clip_id: str
    file: str  # the file that could not be read
    reason: str  # one line

    def __str__(self) -> str:
        return f"{self.clip_id}: {self.file}: {self.reason}"


@dataclass
class ExtractResult:
    """What a run did. ``ok`` is False when clips were skipped and skips were not allowed."""

    store: str
    scheduler: str
    extractors: dict[str, str]  # name -> cache key
    random_weights: list[str]  # extractors that ran (or would run) on seeded random weights
    clips: int  # clips in the manifests' selected splits
    clips_done: int  # clips this run computed arrays for
    clips_reused: int  # clips that were complete already (or finished by another process)
    clips_by_other: int  # of those, clips another process finished while this run waited
    clips_without_audio: int  # clips with no audio track (their audio arrays are zeros)
    skipped: list[Skip]  # clips with bad input, with the file and reason
    frames: int  # frames of the clips this run computed
    arrays_written: int
    arrays_reused: int
    seconds: float  # wall time of the computation (workers), without planning
    seconds_total: float  # wall time of the whole run
    nothing_to_do: bool  # everything was complete: no worker started, no model built
    allow_skips: bool
    precision: str = ""  # the autocast precision the models ran in, and why (--precision auto)
    report: str | None = None  # the JSON run report's path
    root_rebuilt: str | None = None  # what was wrong with the root zarr.json this run rebuilt
    # Clips kept with something masked (audio ending before the video), "clip: file: what", one each
    notes: list[str] = dataclasses.field(default_factory=list)

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.allow_skips or not self.skipped

    def to_json(self) -> dict:
        data = dataclasses.asdict(self)
        data["skipped"] = [dataclasses.asdict(s) for s in self.skipped]
        data["frames_per_second"] = self.frames_per_second
        data["ok"] = self.ok
        return data


# ---- plan ----------------------------------------------------------------------------------------


def _descriptions(extractors: dict[str, Extractor], audio_stride: int) -> dict[str, dict]:
    described = {}
    for name, ext in extractors.items():
        entry = ext.describe()
        if ext.strided:
            entry["audio_stride"] = audio_stride
            entry["array_keys"] = array_keys(ext, audio_stride, has_audio=True)
        described[name] = entry
    return described


@dataclass
class _Plan:
    jobs: list[ClipJob]  # clips with something to compute
    clips_reused: int  # clips with nothing to compute
    arrays_reused: int  # complete arrays left as they are


def _plan(store: FeatureStore, clips: list[Clip], extractors: dict[str, Extractor],
          config: ExtractConfig, progress: ProgressFn) -> _Plan:
    """Check every clip against the store, in threads (hashing stored arrays is I/O-bound)."""
    jobs: list[ClipJob] = []
    reused = arrays = 0
    progress(ProgressEvent("checking store", total=len(clips)))
    with cf.ThreadPoolExecutor(8) as pool:
        # map keeps the manifest order (clips of one video stay adjacent: audio decoded once).
        def check(clip: Clip) -> tuple[ClipJob | None, int]:
            return plan_clip(store, clip, extractors, config.audio_stride, config.verify_existing)

        for job, complete in pool.map(check, clips):
            arrays += complete
            if job is None:
                reused += 1
            else:
                jobs.append(job)
            progress(ProgressEvent("checking store", advance=1))
    return _Plan(jobs, reused, arrays)


def _absolute(clip: Clip) -> Clip:
    """The clip with its media paths made absolute (from this process's working directory):
    a worker started elsewhere (a dask worker, a SLURM job) must open the same files."""
    paths = {k: os.path.abspath(v) for k in ("frames_dir", "video_path", "audio_path")
             if (v := getattr(clip, k)) is not None and not os.path.isabs(v)}
    return dataclasses.replace(clip, **paths) if paths else clip


def _check_written(store_path: Path, outcomes: Any) -> None:
    """Every array the workers reported written is in the store this process reads.

    A worker that saw the store at another path (another mount, a relative path resolved in its
    own directory) wrote somewhere else: then the run must fail, not report success.
    """
    store = FeatureStore(store_path)
    reported = [(o.clip_id, name) for o in outcomes if o.status == "done" for name in o.written]
    absent = [f"{clip}/{name}" for clip, name in reported if store.marker(clip, name) is None]
    if absent:
        raise PipelineError(
            f"{store_path}: workers reported {len(reported)} array(s) written but this store lacks "
            f"{len(absent)} (e.g. {absent[0]}): the workers write another store; they must see "
            "the store, manifests and media at the same absolute paths as this process")


def _write_report(store: FeatureStore, config: ExtractConfig, result: ExtractResult,
                  descriptions: dict[str, dict]) -> Path | None:
    """The run report in ``STORE.meta/reports``; None where it cannot be written (read-only)."""
    reports = store.meta / "reports"
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    path = reports / f"extract-{stamp}.json"
    body = {"config": config_io.to_dict(config), "extractors": descriptions, "result": result.to_json()}
    tmp = path.with_suffix(".json.tmp")
    try:
        reports.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(body, indent=2, default=str) + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError:
        if result.nothing_to_do:
            return None  # a read-only store with nothing to do: nothing to report either
        raise
    return path


def _consolidate(store_path: Path, wrote: bool) -> None:
    """Consolidated metadata for xarray once the store is finished (store_meta): after writing,
    or for a store made before it was written; a read-only store is left as it is."""
    if not wrote and is_consolidated(store_path):
        return
    try:
        consolidate(store_path)
    except StoreError:
        if wrote:
            raise


def run_extract(config: ExtractConfig, manifests_dir: str | Path, store_path: str | Path,
                progress: ProgressFn = silent) -> ExtractResult:
    """Extract every missing array of every clip of ``manifests_dir`` into the store."""
    started = time.perf_counter()
    parse_scheduler(config.scheduler)  # a bad value fails before any work
    try:
        clips = load_clips(manifests_dir, config.splits, au_only=True)  # AU-only clips train AU
    except (FileNotFoundError, ValueError) as e:
        raise PipelineError(str(e)) from None
    if not clips:
        raise PipelineError(f"{manifests_dir}: no clips in splits {', '.join(config.splits)}")
    ids = [c.clip_id for c in clips]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise PipelineError(f"{manifests_dir}: clip {duplicate!r} appears twice in the manifests")
    # Absolute paths before anything is sent to a worker: a dask worker or a SLURM job runs in
    # its own working directory, where a relative path names another store or no file at all.
    clips = [_absolute(c) for c in clips]
    extractors = build_extractors(config)
    store_path = Path(os.path.abspath(store_path))
    descriptions = _descriptions(extractors, config.audio_stride)
    # What the clips' features were extracted for (not their labels): `fuse` checks its
    # manifest against these.
    digests = {c.clip_id: feature_digest(c) for c in clips}
    damage = root_damage(store_path)
    if damage is not None:  # rebuilt from the run reports and these manifests, or one line on what is lost
        rebuild_root(store_path, damage, digests, descriptions)
    # An existing store is planned read-only: no lock, no write unless there is work.
    store = FeatureStore(store_path, "r" if (store_path / "zarr.json").is_file() else "a")
    plan = _plan(store, clips, extractors, config, progress)
    recorded = store.extractors()
    known = store.feature_digests()
    if (plan.jobs or any(known.get(k) != v for k, v in digests.items())
            or any(recorded.get(n) != json.loads(json.dumps(d, default=str))
                   for n, d in descriptions.items())):
        try:
            store = FeatureStore(store_path, "a")
            store.record_extractors(descriptions)
            store.record_manifest(digests)
            if plan.jobs:
                unconsolidate(store_path)  # a writer starts (pipeline.features.store_meta)
        except StoreError:
            if plan.jobs:
                raise
            # Nothing to compute on a store we cannot write: the record stays as it was.
    tally = Tally(len(plan.jobs), sum(j.clip.n_frames for j in plan.jobs), progress)
    compute_start = time.perf_counter()
    if plan.jobs:

        def make_task(shard: list[ClipJob], wait: bool = False) -> ShardTask:
            return ShardTask(
                store=str(store_path), jobs=shard, extractors=extractors,
                batch_size=config.batch_size, audio_stride=config.audio_stride,
                loader_threads=config.loader_threads, prefetch=config.prefetch, wait=wait,
                audio_short_tolerance=config.audio_short_tolerance)

        with open_executor(config.scheduler, on_message=tally.frames_run) as workers:
            compute_start = time.perf_counter()
            tally.start = compute_start
            if workers.in_process:
                target = math.inf  # one shard: batches span every clip, no padding between shards
            else:
                per_worker = sum(j.clip.n_frames for j in plan.jobs) / (2 * workers.workers)
                target = max(config.batch_size, min(config.shard_frames, per_worker))
            locked = run_shards(workers, shards(plan.jobs, target), make_task, tally)
            if locked:
                # Another process held these: wait for its locks now, then re-check and finish.
                run_shards(workers, shards(locked, target),
                            lambda shard: make_task(shard, wait=True), tally)
    seconds = time.perf_counter() - compute_start

    outcomes = tally.outcomes.values()
    if plan.jobs and parse_scheduler(config.scheduler).kind != "inprocess":
        _check_written(store_path, outcomes)
    random = [n for n, e in extractors.items() if e.random_weights]
    result = ExtractResult(
        store=str(store_path),
        scheduler=config.scheduler,
        extractors={n: e.cache_key for n, e in extractors.items()},
        random_weights=random,
        clips=len(clips),
        clips_done=sum(o.status == "done" for o in outcomes),
        clips_reused=plan.clips_reused + sum(o.status == "by_other" for o in outcomes),
        clips_by_other=sum(o.status == "by_other" for o in outcomes),
        clips_without_audio=sum(c.audio_path is None for c in clips),
        skipped=[Skip(o.clip_id, o.file or "", o.reason or "") for o in outcomes if o.status == "skipped"],
        frames=tally.frames,
        arrays_written=sum(len(o.written) for o in outcomes),
        arrays_reused=plan.arrays_reused + sum(o.reused for o in outcomes),
        seconds=seconds if plan.jobs else 0.0,
        seconds_total=0.0,
        nothing_to_do=not plan.jobs,
        allow_skips=config.allow_skips,
        precision="{} ({})".format(*resolve_precision(config.precision, resolve_device(config.device))),
        root_rebuilt=damage,
        notes=[f"{o.clip_id}: {o.note}" for o in outcomes if o.status == "done" and o.note],
    )
    _consolidate(store_path, wrote=bool(plan.jobs))
    result.seconds_total = time.perf_counter() - started
    report = _write_report(store, config, result, descriptions)
    result.report = str(report) if report is not None else None
    return result
