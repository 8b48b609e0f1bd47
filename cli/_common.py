"""What every command shares: the console, one-line errors, and progress: a rich bar on a
terminal, and in a batch log (stderr not a terminal: SLURM, nohup, a pipe) one plain line per
task every ``FER_PROGRESS_SECONDS`` seconds (default 30) with done/total, rate and ETA, also when
nothing advanced in that time (a heartbeat thread: the line then says for how long)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from pipeline.progress import ProgressEvent, ProgressFn

console = Console()
err_console = Console(stderr=True)


def fail(message: str) -> typer.Exit:
    """Print a one-line error and return the exit to raise: ``raise fail("...")``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(1)


LOG_SECONDS = 30.0  # default seconds between progress lines in a batch log


def _info_text(info: dict) -> str:
    return "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                     for k, v in info.items())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


@dataclass
class _Task:
    started: float
    total: int | None = None
    done: int = 0
    info: dict = field(default_factory=dict)
    printed_at: float = -1.0  # when its last line was printed (-1: never)
    advanced_at: float = 0.0  # when it last advanced (its start until then)

    def __post_init__(self) -> None:
        self.advanced_at = self.started


class LogLines:
    """A :data:`ProgressFn` for batch logs: a line per task at most every ``interval`` seconds,
    and one when the task completes, e.g.
    ``[00:03:20] clips 120/548 (22%)  0.6/s  ETA 0:11:53  frames/s 412``."""

    def __init__(self, console: Console, interval: float, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self.console, self.interval, self.clock = console, interval, clock
        self.start = clock()
        self.tasks: dict[str, _Task] = {}
        self.lock = threading.Lock()  # events come from worker threads, beats from a timer

    def heartbeat(self) -> None:
        """A line for each unfinished task that printed none for ``interval`` seconds, so that
        a log shows the run is alive while a long step sends no event (one batch, one dask
        shard). The line says how long it has been since anything advanced."""
        with self.lock:
            now = self.clock()
            for name, task in self.tasks.items():
                finished = task.total is not None and task.done >= task.total
                if finished or task.printed_at < 0 or now - task.printed_at < self.interval:
                    continue
                task.printed_at = now
                quiet = _duration(now - task.advanced_at)
                self.console.print(f"{self.line(name, task, now)}  (no change for {quiet})",
                                   highlight=False, soft_wrap=True, markup=False)

    def __call__(self, event: ProgressEvent) -> None:
        with self.lock:
            self._event(event)

    def _event(self, event: ProgressEvent) -> None:
        now = self.clock()
        if event.total is not None or event.task not in self.tasks:
            # An event with a total (re)starts its task: a bag's members each train "epochs".
            self.tasks[event.task] = _Task(started=now, total=event.total)
        task = self.tasks[event.task]
        task.done += event.advance
        if event.advance:
            task.advanced_at = now
        task.info = dict(event.info) or task.info
        finished = task.total is not None and task.done >= task.total and event.advance > 0
        due = task.printed_at < 0 or now - task.printed_at >= self.interval
        if (finished or due) and (event.advance or task.printed_at < 0):
            task.printed_at = now
            self.console.print(self.line(event.task, task, now), highlight=False, soft_wrap=True,
                               markup=False)

    def line(self, name: str, task: _Task, now: float) -> str:
        parts = [f"[{_duration(now - self.start)}] {name}"]
        if task.total:
            parts[0] += f" {task.done}/{task.total} ({100 * task.done / task.total:.0f}%)"
        else:
            parts[0] += f" {task.done}"
        elapsed = now - task.started
        if task.done and elapsed > 0:
            rate = task.done / elapsed
            parts.append(f"{rate:.3g}/s")
            if task.total:
                parts.append(f"ETA {_duration(max(task.total - task.done, 0) / rate)}")
        if task.info:
            parts.append(_info_text(task.info))
        return "  ".join(parts)


def _log_seconds() -> float:
    try:
        return float(os.environ.get("FER_PROGRESS_SECONDS", LOG_SECONDS))
    except ValueError:
        return LOG_SECONDS


def _beat(log: LogLines, stop: threading.Event) -> None:
    """Call ``log.heartbeat`` every few seconds until ``stop`` (a line is due every interval)."""
    while not stop.wait(min(log.interval, 5.0)):
        log.heartbeat()


@contextlib.contextmanager
def progress_bar(console: Console | None = None) -> Iterator[ProgressFn]:
    """A :data:`ProgressFn` that drives rich progress bars, one per task name, on a terminal;
    :class:`LogLines` otherwise (a bar would print nothing until the end in a log file)."""
    console = console or err_console
    if not console.is_terminal:
        log = LogLines(console, _log_seconds())
        stop = threading.Event()
        beat = threading.Thread(target=_beat, args=(log, stop), name="fer-log-heartbeat", daemon=True)
        if log.interval > 0:
            beat.start()
        try:
            yield log
        finally:
            stop.set()
            if beat.is_alive():
                beat.join()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(event: ProgressEvent) -> None:
            info = _info_text(event.info)
            if event.task not in tasks:
                tasks[event.task] = bar.add_task(event.task, total=event.total, info=info)
            elif event.total is not None:  # a total (re)starts the task, as in LogLines
                bar.reset(tasks[event.task], total=event.total)
            bar.update(tasks[event.task], advance=event.advance, info=info)

        yield update
