"""One executor abstraction for every stage: in-process, a local process pool, or dask.

A stage splits its work into tasks (for extraction: shards of clips) and hands them to
:func:`open_executor`, which yields a :class:`Workers` around a ``concurrent.futures.Executor``.
The same code then runs wherever ``--scheduler`` points:

==================  ========================================================================
``inprocess``       in this process, one task after another (the default; easiest to debug)
``processes:N``     a local pool of N processes (``spawn``: no forked torch or zarr state)
``local:N``         a ``dask.distributed.LocalCluster`` of N single-threaded worker processes
``tcp://HOST:PORT`` a running dask scheduler (e.g. from dask-jobqueue); workers must see the
                    same files (manifests, frames, the store) at the same paths
==================  ========================================================================

Every task sets torch's intra-op threads before it runs, so that N workers on one machine share
its cores instead of each starting one thread per core: ``cores // N`` per worker (at least 1),
where for a dask scheduler N is the number of task slots on the worker's host.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pipeline.errors import PipelineError

SCHEDULER_HELP = "inprocess, processes:N, local:N (dask LocalCluster) or tcp://HOST:PORT (dask)"


@dataclass(frozen=True)
class Scheduler:
    """A parsed ``--scheduler`` value."""

    kind: str  # "inprocess", "processes", "local" or "dask"
    workers: int = 1  # worker processes (for "dask": unknown until connected, so 1)
    address: str | None = None  # the dask scheduler's address for kind "dask"

    def __str__(self) -> str:
        if self.kind == "inprocess":
            return "inprocess"
        if self.kind == "dask":
            return str(self.address)
        return f"{self.kind}:{self.workers}"


def parse_scheduler(spec: str) -> Scheduler:
    """``inprocess`` | ``processes:N`` | ``local:N`` | ``tcp://HOST:PORT`` -> :class:`Scheduler`."""
    spec = spec.strip()
    if spec == "inprocess":
        return Scheduler("inprocess")
    if spec.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        return Scheduler("dask", address=spec)
    match = re.fullmatch(r"(processes|local):(\d+)", spec)
    if match is None or int(match[2]) < 1:
        raise PipelineError(f"scheduler {spec!r}: expected {SCHEDULER_HELP}")
    return Scheduler(match[1], int(match[2]))


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cpusets, unlike ``os.cpu_count``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers_on_host: int, cores: int | None = None) -> int:
    """Torch threads for each of ``workers_on_host`` workers sharing ``cores`` (at least 1)."""
    return max(1, (available_cores() if cores is None else cores) // max(1, workers_on_host))


def _with_threads(threads: int | None, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run ``fn`` in a worker after setting torch's intra-op threads (process-wide)."""
    if threads is not None:
        import torch

        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
    return fn(*args, **kwargs)


class InProcessExecutor(cf.Executor):
    """Runs each task when it is submitted, in the caller's thread; returns a finished future."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        future: cf.Future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as e:  # noqa: BLE001  (delivered through the future, as a pool would)
            future.set_exception(e)
        return future


class _ThreadedExecutor(cf.Executor):
    """Wraps an executor so that every task first sets its worker's torch threads."""

    def __init__(self, inner: cf.Executor, threads: int | None) -> None:
        self._inner = inner
        self._threads = threads

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> cf.Future:
        return self._inner.submit(_with_threads, self._threads, fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._inner.shutdown(wait=wait)


@dataclass
class Workers:
    """An open executor and what a stage needs to know to split work for it."""

    executor: cf.Executor  # submit(fn, *args) -> concurrent.futures.Future
    scheduler: Scheduler  # what was asked for
    workers: int  # tasks that run at once (split work into at least this many tasks)
    threads: int | None  # torch threads each task runs with (None: left as the process has it)

    @property
    def in_process(self) -> bool:
        """Tasks run in this process: they may be handed callbacks and unpicklable objects."""
        return self.scheduler.kind == "inprocess"


def _dask_slots(client: Any) -> tuple[int, int]:
    """(task slots in the cluster, torch threads per slot on the most crowded host)."""
    from distributed.comm import get_address_host

    info = client.scheduler_info()["workers"]
    if not info:
        raise PipelineError(f"dask scheduler {client.scheduler.address}: no workers connected")
    cores = client.run(available_cores)  # address -> cores that worker's process may use
    slots: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for address, worker in info.items():
        host = get_address_host(address)
        slots[host] = slots.get(host, 0) + int(worker.get("nthreads", 1))
        host_cores[host] = int(cores.get(address, 1))
    threads = min(threads_per_worker(slots[h], host_cores[h]) for h in slots)
    return sum(slots.values()), threads


@contextlib.contextmanager
def open_executor(scheduler: str | Scheduler) -> Iterator[Workers]:
    """Start (or join) what ``scheduler`` names; shut it down (or leave it) on exit."""
    if isinstance(scheduler, str):
        scheduler = parse_scheduler(scheduler)
    if scheduler.kind == "inprocess":
        yield Workers(InProcessExecutor(), scheduler, 1, None)
        return
    if scheduler.kind == "processes":
        threads = threads_per_worker(scheduler.workers)
        pool = cf.ProcessPoolExecutor(scheduler.workers, mp_context=multiprocessing.get_context("spawn"))
        try:
            yield Workers(_ThreadedExecutor(pool, threads), scheduler, scheduler.workers, threads)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        return

    from distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if scheduler.kind == "local":
            cluster = stack.enter_context(LocalCluster(
                n_workers=scheduler.workers, threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=logging.ERROR,
            ))
            client = stack.enter_context(Client(cluster))
            slots, threads = scheduler.workers, threads_per_worker(scheduler.workers)
        else:
            try:
                client = stack.enter_context(Client(scheduler.address, timeout="30s"))
            except OSError as e:
                raise PipelineError(f"dask scheduler {scheduler.address}: cannot connect ({e})") from None
            slots, threads = _dask_slots(client)
        # pure=False: two shards with equal arguments are still two tasks (dask would merge them).
        executor = _ThreadedExecutor(client.get_executor(pure=False), threads)
        yield Workers(executor, scheduler, slots, threads)
