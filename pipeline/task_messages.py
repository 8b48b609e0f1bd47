"""Messages from running tasks back to the stage that submitted them: progress within a task.

:func:`pipeline.parallel.open_executor` hands tasks a picklable ``relay``; what a task passes to
it reaches the stage's ``on_message`` in the submitting process, by the cheapest way there:

* in-process: the relay is ``on_message`` itself;
* a process pool: a ``multiprocessing`` queue given to each worker as it starts (a queue cannot
  travel with a task), read by a thread of the parent (:func:`pool_messages`);
* dask (a ``LocalCluster``, a scheduler, SLURM jobs): worker events (``Worker.log_event``) on a
  topic of this run that the client subscribes to; each goes through the scheduler, which keeps a
  topic's recent events, so they are throttled to one per key (a clip) and second.

Messages are best effort: one may arrive after its task's result, or never (a throttled one);
the stage treats them as progress only, and task results stay the record.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from queue import Empty
from typing import Any, Callable, Iterator

logger = logging.getLogger(__name__)

_PARENT_QUEUE: list[Any] = []  # in a pool worker: the queue to the parent (set by init_pool_worker)
_TASK_WORKER: dict[str, Any] = {}  # in a dask worker process: its Worker (set as a task starts)
_LAST_EVENT: dict[tuple, float] = {}  # in a dask worker process: when each key last sent
DASK_RELAY_SECONDS = 1.0  # at most one message per key (a clip) and second through the scheduler


def init_pool_worker(queue: Any, then: Callable[[], None]) -> None:
    """Pool-worker initializer: keep the queue :func:`pool_relay` sends on, then run ``then``."""
    if queue is not None:  # None: the stage wants no messages
        _PARENT_QUEUE.append(queue)
    then()


def note_dask_worker() -> None:
    """In a dask task's own thread, as it starts: keep its worker for :func:`dask_relay`, which
    the task's other threads call (the worker is a context variable of the task's thread)."""
    if "distributed" in sys.modules:  # never imported in a pool worker or by inprocess tasks
        from distributed import get_worker

        with contextlib.suppress(ValueError):  # not in a dask task
            _TASK_WORKER["worker"] = get_worker()


def pool_relay(*message: Any) -> None:
    """A pool task's relay (a module function: it pickles by name): onto the parent's queue."""
    if _PARENT_QUEUE:
        _PARENT_QUEUE[0].put_nowait(message)


def dask_relay(topic: str, *message: Any) -> None:
    """A dask task's relay: a worker event the client subscribed to, at most one per
    :data:`DASK_RELAY_SECONDS` per ``message[0]`` (every message goes through the scheduler,
    which keeps a topic's last events). Works from the task's own threads (the worker is
    looked up when the task starts: :func:`note_dask_worker`); elsewhere it sends nothing."""
    worker = _TASK_WORKER.get("worker")
    key = (topic, message[0] if message else None)
    now = time.monotonic()
    if worker is None or now - _LAST_EVENT.get(key, -DASK_RELAY_SECONDS) < DASK_RELAY_SECONDS:
        return
    _LAST_EVENT[key] = now
    worker.log_event(topic, list(message))


def deliver(on_message: Callable[..., None], message: Any) -> None:
    """Call the stage's handler; a failing handler is logged, never fatal to the run."""
    try:
        on_message(*message)
    except Exception:  # noqa: BLE001  (progress display only)
        logger.warning("progress message %r not delivered", message, exc_info=True)


@contextlib.contextmanager
def pool_messages(context: Any, on_message: Callable[..., None] | None) -> Iterator[Any]:
    """A queue for pool workers (None without ``on_message``) and a thread that hands what
    arrives to ``on_message`` until the block ends (after the pool has shut down)."""
    if on_message is None:
        yield None
        return
    queue = context.Queue()
    stop = threading.Event()

    def drain() -> None:
        while True:
            try:
                message = queue.get(timeout=0.1)
            except Empty:
                if stop.is_set():
                    return
                continue
            deliver(on_message, message)

    reader = threading.Thread(target=drain, name="pool-messages", daemon=True)
    reader.start()
    try:
        yield queue
    finally:
        stop.set()
        reader.join()
        queue.close()
