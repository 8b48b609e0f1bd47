"""One executor abstraction for every stage: in-process, a local process pool, or dask.

A stage splits its work into tasks (for extraction: shards of clips) and hands them to
:func:`open_executor`, which yields a :class:`Workers` around a ``concurrent.futures.Executor``.
The same code then runs wherever ``--scheduler`` points:

==================  ========================================================================
``inprocess``       in this process, one task after another (the default; easiest to debug)
``processes:N``     a local pool of N processes (``spawn``: no forked torch or zarr state)
``local:N``         a ``dask.distributed.LocalCluster`` of N single-threaded worker processes
``tcp://HOST:PORT`` a running dask scheduler; workers must see the same files (manifests,
                    frames, the store) at the same paths
``file:PATH``       the dask scheduler whose address ``dask scheduler --scheduler-file PATH``
                    wrote (the usual way to start one inside an ``sbatch`` script)
``slurm:N[,k=v]``   a ``dask_jobqueue.SLURMCluster`` of N batch jobs, one worker each, from the
                    user's dask-jobqueue config (``~/.config/dask/jobqueue.yaml``) with
                    overrides, e.g. ``slurm:4,cores=8,memory=32GB,walltime=02:00:00,queue=gpu``;
                    ``gres=gpu:1`` requests GPUs (:func:`slurm_job_script` shows the script)
==================  ========================================================================

Every task sets torch's intra-op threads before it runs, so that N workers on one machine share
its cores instead of each starting one thread per core: ``cores // N`` per worker (at least 1),
where for a dask scheduler N is the number of task slots on the worker's host.

Pool workers die with their parent (``PR_SET_PDEATHSIG`` on Linux), so a SIGTERM from a batch
system's time limit, or a SIGKILL, never leaves orphans writing into the store; a rerun resumes.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import functools
import logging
import multiprocessing
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterator

from pipeline.errors import PipelineError
from pipeline.task_messages import (dask_relay, deliver, init_pool_worker, note_dask_worker,
                                    pool_messages, pool_relay)

SCHEDULER_HELP = ("inprocess, processes:N, local:N (dask LocalCluster), tcp://HOST:PORT or "
                  "file:SCHEDULER_FILE (a dask scheduler), slurm:N[,key=value...] (dask-jobqueue)")
# SLURMCluster options a ``slurm:`` spec may set (the rest come from the user's jobqueue config).
SLURM_OPTIONS = {"cores": int, "processes": int, "memory": str, "walltime": str, "queue": str,
                 "account": str, "job_name": str, "log_directory": str, "local_directory": str,
                 "interface": str, "gres": str}


@dataclass(frozen=True)
class Scheduler:
    """A parsed ``--scheduler`` value."""

    kind: str  # "inprocess", "processes", "local", "dask", "file" or "slurm"
    workers: int = 1  # worker processes or SLURM jobs (for "dask"/"file": unknown, so 1)
    address: str | None = None  # the scheduler's address ("dask") or scheduler file ("file")
    options: tuple[tuple[str, Any], ...] = ()  # SLURMCluster overrides ("slurm")

    def __str__(self) -> str:
        if self.kind == "inprocess":
            return "inprocess"
        if self.kind == "dask":
            return str(self.address)
        if self.kind == "file":
            return f"file:{self.address}"
        extra = "".join(f",{k}={v}" for k, v in self.options)
        return f"{self.kind}:{self.workers}{extra}"


def parse_scheduler(spec: str) -> Scheduler:
    """``inprocess`` | ``processes:N`` | ``local:N`` | ``tcp://HOST:PORT`` -> :class:`Scheduler`."""
    spec = spec.strip()
    if spec == "inprocess":
        return Scheduler("inprocess")
    if spec.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        return Scheduler("dask", address=spec)
    if spec.startswith("file:") and spec[len("file:"):]:
        return Scheduler("file", address=spec[len("file:"):])
    match = re.fullmatch(r"(processes|local|slurm):(\d+)((?:,[a-z_]+=[^,]+)*)", spec)
    if match is None or int(match[2]) < 1 or (match[3] and match[1] != "slurm"):
        raise PipelineError(f"scheduler {spec!r}: expected {SCHEDULER_HELP}")
    options = []
    for item in filter(None, match[3].split(",")):
        key, _, value = item.partition("=")
        known = {**SLURM_OPTIONS, "submit_timeout": float}  # seconds sbatch may take to answer
        if key not in known:
            raise PipelineError(f"scheduler {spec!r}: unknown SLURM option {key!r}; "
                                f"choose from {', '.join(sorted(known))}")
        try:
            options.append((key, known[key](value)))
        except ValueError:
            kind = "an integer" if known[key] is int else "a number"
            raise PipelineError(f"scheduler {spec!r}: {key} must be {kind}, not {value!r}") from None
    return Scheduler(match[1], int(match[2]), options=tuple(options))


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
    note_dask_worker()
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
    # Picklable: a task calls relay(*message) to have the stage's on_message(*message) called
    # in this process (see open_executor); None when the stage gave no on_message.
    relay: Callable[..., None] | None = None

    @property
    def in_process(self) -> bool:
        """Tasks run in this process: they may be handed callbacks and unpicklable objects."""
        return self.scheduler.kind == "inprocess"


def _dask_slots(client: Any, wait: float | None = 60.0) -> tuple[int, int]:
    """(task slots in the cluster, torch threads per slot on the most crowded host).

    Waits up to ``wait`` seconds (None: for ever) for a first worker: in a batch job, workers
    start beside the scheduler and join a little later.
    """
    from distributed.comm import get_address_host

    try:
        client.wait_for_workers(1, timeout=wait)
    except TimeoutError:
        raise PipelineError(f"dask scheduler {client.scheduler.address}: no workers connected "
                            f"within {wait} s") from None
    info = client.scheduler_info()["workers"]
    cores = client.run(available_cores)  # address -> cores that worker's process may use
    slots: dict[str, int] = {}
    host_cores: dict[str, int] = {}
    for address, worker in info.items():
        host = get_address_host(address)
        slots[host] = slots.get(host, 0) + int(worker.get("nthreads", 1))
        host_cores[host] = int(cores.get(address, 1))
    threads = min(threads_per_worker(slots[h], host_cores[h]) for h in slots)
    return sum(slots.values()), threads


def _die_with_parent() -> None:
    """Pool-worker initializer: the kernel sends SIGTERM to this worker when its parent dies.

    Without it a SIGTERM (a batch system's time limit) or SIGKILL of ``extract`` left its pool
    workers running on, writing and holding hundreds of MB each. Linux only; elsewhere a no-op.
    """
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before prctl ran
            os._exit(1)


def slurm_cluster(scheduler: Scheduler, **extra: Any) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` for a ``slurm:`` spec, with no job submitted yet.

    Unset options come from the user's dask-jobqueue config (``jobqueue.slurm.*``), which is
    where site settings (account, partition, ``job_extra_directives``, the Python to run) live.
    ``processes`` defaults to 1: one worker process per job loads each model once and runs
    ``cores`` shards at once, each with one torch thread (see :func:`threads_per_worker`).
    ``extra`` goes to ``SLURMCluster`` as is (e.g. ``scheduler_options``).
    """
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise PipelineError("scheduler slurm: needs dask-jobqueue (pip install dask-jobqueue)") from None
    options = {"processes": 1, **_jobqueue_options(scheduler), **extra}
    require_job_size(scheduler, options)
    try:
        return SLURMCluster(silence_logs=logging.ERROR, **options)
    except ValueError as e:  # e.g. no cores/memory in the spec nor in the jobqueue config
        raise PipelineError(f"scheduler {scheduler}: {' '.join(str(e).split())[:200]}") from None


def require_job_size(scheduler: Scheduler, options: dict[str, Any]) -> None:
    """Refuse a ``slurm:`` spec without ``cores`` or ``memory`` (in the spec or the user's
    dask-jobqueue config) in the option syntax, before dask-jobqueue says it in Python."""
    import dask.config

    missing = [key for key in ("cores", "memory")
               if options.get(key) is None and dask.config.get(f"jobqueue.slurm.{key}", None) is None]
    if missing:
        example = {"cores": "cores=8", "memory": "memory=24GB"}
        raise PipelineError(
            f"scheduler {scheduler}: each SLURM job needs {' and '.join(missing)}; add to the option, "
            f"e.g. --scheduler {scheduler},{','.join(example[k] for k in missing)} "
            f"(or set {' and '.join('jobqueue.slurm.' + k for k in missing)} in your dask-jobqueue "
            "config)")


def _jobqueue_options(scheduler: Scheduler) -> dict[str, Any]:
    """A ``slurm:`` spec's options as ``SLURMCluster`` takes them: ``gres=gpu:1`` (a generic
    resource request, e.g. GPUs: SLURMCluster has no option of its own for it) becomes the
    directive ``#SBATCH --gres=gpu:1``, after those of the user's jobqueue config."""
    import dask.config

    options = dict(scheduler.options)
    options.pop("submit_timeout", None)  # ours (pipeline.slurm_submit), not SLURMCluster's
    gres = options.pop("gres", None)
    if gres is not None:
        configured = dask.config.get("jobqueue.slurm.job-extra-directives", None) or []
        options["job_extra_directives"] = [*configured, f"--gres={gres}"]
    return options


# What dask-jobqueue fills in at submission: the printed script shows these instead.
SCHEDULER_PLACEHOLDER = "<SCHEDULER_ADDRESS>"  # the scheduler the submitting process starts
WORKER_NAME_PLACEHOLDER = "<WORKER_NAME>"  # one name per job


def slurm_job_script(spec: str | Scheduler) -> str:
    """The batch script a ``slurm:`` spec would submit for each job, with
    :data:`SCHEDULER_PLACEHOLDER` and :data:`WORKER_NAME_PLACEHOLDER` where dask-jobqueue puts
    the scheduler's address and the job's worker name at submission: what ``extract
    --print-job-script`` prints. Nothing is submitted, no scheduler started, nothing written
    (dask-jobqueue would create the log directory: the script is built against a throwaway one
    whose name is then replaced); no SLURM needed.
    """
    import tempfile

    import dask.config

    scheduler = parse_scheduler(spec) if isinstance(spec, str) else spec
    if scheduler.kind != "slurm":
        raise PipelineError(f"scheduler {scheduler}: only a slurm: scheduler has a job script")
    try:
        from dask_jobqueue.slurm import SLURMJob
    except ImportError:
        raise PipelineError("scheduler slurm: needs dask-jobqueue (pip install dask-jobqueue)") from None
    # The same job class and options as slurm_cluster()'s jobs (SLURMCluster adds only the
    # scheduler's address and a name, and reads the same jobqueue config as the job).
    options = {"processes": 1, **_jobqueue_options(scheduler)}
    require_job_size(scheduler, options)
    log_directory = (options.pop("log_directory", None)
                     or dask.config.get("jobqueue.slurm.log-directory", None))
    with tempfile.TemporaryDirectory(prefix="fer-job-script-") as stand_in:
        try:
            job = SLURMJob(scheduler=SCHEDULER_PLACEHOLDER, name=WORKER_NAME_PLACEHOLDER,
                           log_directory=stand_in if log_directory else None, **options)
        except ValueError as e:  # e.g. no cores/memory in the spec nor in the jobqueue config
            raise PipelineError(f"scheduler {scheduler}: {' '.join(str(e).split())[:200]}") from None
        script = job.job_script()
        return script.replace(stand_in, str(log_directory)) if log_directory else script


def _connect(scheduler: Scheduler, stack: contextlib.ExitStack) -> Any:
    """A dask client for a scheduler given by address or by scheduler file."""
    from distributed import Client

    where = scheduler.address if scheduler.kind == "dask" else f"scheduler file {scheduler.address}"
    if scheduler.kind == "file" and not os.path.isfile(str(scheduler.address)):
        raise PipelineError(f"{scheduler.address}: no such scheduler file (start one with "
                            "`dask scheduler --scheduler-file PATH`)")
    try:
        if scheduler.kind == "file":
            return stack.enter_context(Client(scheduler_file=scheduler.address, timeout="30s"))
        return stack.enter_context(Client(scheduler.address, timeout="30s"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"dask {where}: cannot connect ({' '.join(str(e).split())[:200]})") from None


@contextlib.contextmanager
def _shut_down(pool: cf.ProcessPoolExecutor) -> Iterator[None]:
    """Shut a pool down on exit; interrupted (Ctrl-C, SIGTERM) or failed, stop its workers now
    rather than let them finish their shards (a rerun recomputes what they had not marked)."""
    try:
        yield
    except BaseException:
        for process in list(getattr(pool, "_processes", {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def open_executor(scheduler: str | Scheduler,
                  on_message: Callable[..., None] | None = None) -> Iterator[Workers]:
    """Start (or join) what ``scheduler`` names; shut it down (or leave it) on exit.

    ``on_message``: called in this process with what a task passes to ``Workers.relay`` (a
    picklable function tasks are handed), e.g. frames done within a shard: in-process directly;
    from a pool through a queue and a reader thread; from dask workers as worker events the
    client subscribes to (throttled), called on the client's thread (:mod:`pipeline.task_messages`).
    Best effort: a message may come after its task's result, and none comes after exit.
    """
    if isinstance(scheduler, str):
        scheduler = parse_scheduler(scheduler)
    if scheduler.kind == "inprocess":
        yield Workers(InProcessExecutor(), scheduler, 1, None, on_message)
        return
    if scheduler.kind == "processes":
        threads = threads_per_worker(scheduler.workers)
        context = multiprocessing.get_context("spawn")
        with pool_messages(context, on_message) as queue:
            pool = cf.ProcessPoolExecutor(scheduler.workers, mp_context=context, initializer=init_pool_worker,
                                          initargs=(queue, _die_with_parent))
            relay = pool_relay if queue is not None else None
            with _shut_down(pool):
                yield Workers(_ThreadedExecutor(pool, threads), scheduler, scheduler.workers, threads,
                              relay)
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
        elif scheduler.kind == "slurm":
            from pipeline.slurm_submit import (SUBMIT_SECONDS, submission_logs_quiet,
                                               submission_watch, wait_for_first_job)

            options = dict(scheduler.options)
            failures, job_cls = submission_watch(options.get("submit_timeout", SUBMIT_SECONDS))
            cluster = stack.enter_context(slurm_cluster(scheduler, job_cls=job_cls))
            with submission_logs_quiet():
                cluster.scale(jobs=scheduler.workers)
                client = stack.enter_context(Client(cluster))
                # Jobs wait in the queue: wait for the first worker (the rest join as they
                # start), but stop at once, with sbatch's message, when a submission fails.
                wait_for_first_job(client, failures, str(scheduler))
            slots, threads = _dask_slots(client, wait=None)
        else:
            client = _connect(scheduler, stack)
            slots, threads = _dask_slots(client)
        # pure=False: two shards with equal arguments are still two tasks (dask would merge them).
        executor = _ThreadedExecutor(client.get_executor(pure=False), threads)
        relay = None
        if on_message is not None:
            topic = f"fer-pipeline-{uuid.uuid4().hex}"  # this run's: a shared scheduler serves others
            client.subscribe_topic(topic, lambda event: deliver(on_message, event[1]))
            stack.callback(client.unsubscribe_topic, topic)
            relay = functools.partial(dask_relay, topic)
        yield Workers(executor, scheduler, slots, threads, relay)
