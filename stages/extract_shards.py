"""Running ``extract``'s shards: cutting the planned clips into shards, submitting them to the
executor, and tallying their outcomes into progress events and counts (in-process outcomes come
from the worker's threads, frame counts within a clip from :mod:`pipeline.task_messages`'s relay).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from typing import Any, Callable

from pipeline.features.plan import ClipJob
from pipeline.features.runner import ClipOutcome, ShardTask, run_shard
from pipeline.parallel import Workers
from pipeline.progress import ProgressEvent, ProgressFn

__all__ = ["Tally", "run_shards", "shards"]


def shards(jobs: list[ClipJob], target_frames: float) -> list[list[ClipJob]]:
    """Consecutive runs of jobs of about ``target_frames`` frames (a long clip is its own shard)."""
    shards: list[list[ClipJob]] = []
    current: list[ClipJob] = []
    frames = 0
    for job in jobs:
        if current and frames + job.clip.n_frames > target_frames:
            shards.append(current)
            current, frames = [], 0
        current.append(job)
        frames += job.clip.n_frames
    if current:
        shards.append(current)
    return shards


class Tally:
    """Turns clip outcomes into progress events and counts (used from worker threads in-process,
    and from the thread that relays workers' frame counts)."""

    def __init__(self, total_clips: int, total_frames: int, progress: ProgressFn) -> None:
        self.outcomes: dict[str, ClipOutcome] = {}
        self.lock = threading.Lock()  # in-process, outcomes come from the worker's threads
        self.total_clips = total_clips
        self.progress = progress
        self.start = time.perf_counter()
        self.frames = 0
        self.skipped = 0
        self.partial: dict[str, int] = {}  # clip -> frames run so far, for clips not ended
        progress(ProgressEvent("extracting frames", total=total_frames,
                               info={"clips": f"0/{total_clips}"}))

    def __call__(self, outcome: ClipOutcome) -> None:
        with self.lock:
            if outcome.clip_id in self.outcomes or outcome.status == "locked":
                return  # in-process outcomes arrive twice (live and with the shard's result)
            self.outcomes[outcome.clip_id] = outcome
            self.frames += outcome.frames
            self.skipped += outcome.status == "skipped"
            shown = self.partial.pop(outcome.clip_id, 0)  # frames of it shown already
            self.progress(ProgressEvent("extracting frames", advance=outcome.clip_frames - shown,
                                        info=self._info(self.frames)))

    def frames_run(self, clip_id: str, frames: int) -> None:
        """Frames of a clip still running (in-process, or relayed from pool and dask workers:
        pipeline.task_messages): the bar and the log lines move within a long clip instead of
        waiting for its end. Called from another thread for a pool or dask; a late call, for a
        clip whose outcome came first, is ignored."""
        with self.lock:
            if clip_id in self.outcomes:
                return
            advance = frames - self.partial.get(clip_id, 0)
            if advance <= 0:
                return
            self.partial[clip_id] = frames
            running = self.frames + sum(self.partial.values())
            self.progress(ProgressEvent("extracting frames", advance=advance,
                                        info=self._info(running)))

    def _info(self, frames: int) -> dict[str, Any]:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        info: dict[str, Any] = {"clips": f"{len(self.outcomes)}/{self.total_clips}",
                                "frames/s": frames / elapsed}
        if self.skipped:
            info["skipped"] = self.skipped
        return info


def run_shards(workers: Workers, shards: list[list[ClipJob]],
                make_task: Callable[[list[ClipJob]], ShardTask], tally: Tally) -> list[ClipJob]:
    """Run shards to completion; return the jobs of clips that another process held locked."""
    live = tally if workers.in_process else None  # a callback cannot travel to other processes
    # Frames within a shard: workers.relay (tally.frames_run, or a picklable relay to it).
    futures = [workers.executor.submit(run_shard, make_task(shard), live, workers.relay) for shard in shards]
    jobs = {job.clip.clip_id: job for shard in shards for job in shard}
    locked: list[ClipJob] = []
    try:
        for future in cf.as_completed(futures):
            for outcome in future.result():
                if outcome.status == "locked":
                    locked.append(jobs[outcome.clip_id])
                else:
                    tally(outcome)
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    return locked
