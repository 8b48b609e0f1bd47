"""What every command shares: the console, one-line errors, and the rich progress bar."""

from __future__ import annotations

import contextlib
from typing import Iterator

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


@contextlib.contextmanager
def progress_bar() -> Iterator[ProgressFn]:
    """A :data:`ProgressFn` that drives rich progress bars, one per task name."""
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(event: ProgressEvent) -> None:
            info = "  ".join(
                f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in event.info.items()
            )
            if event.task not in tasks:
                tasks[event.task] = bar.add_task(event.task, total=event.total, info=info)
            bar.update(tasks[event.task], advance=event.advance, info=info,
                       **({"total": event.total} if event.total is not None else {}))

        yield update
