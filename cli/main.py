"""The ``fer-pipeline`` command: one typer app joining the command groups of each stage.

Errors end as one line on stderr and a non-zero exit; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import signal
import sys
import threading

import typer
import typer.main

from cli import (bundle, conventions, cv, data, demo, describe, ensemble, export, extract, faces,
                 finetune, fuse, recipe)
from cli import store_io  # noqa: F401  (adds `store import|export` to extract's store group)
from cli._common import err_console
from pipeline import __version__

app = typer.Typer(
    name="fer-pipeline",
    help="Feature extraction and late fusion for audio-visual facial expression recognition.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fer-pipeline {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-line errors."),
) -> None:
    """Stages: demo-data/manifest -> [finetune] -> extract -> fuse -> ensemble."""


for group in (data, demo, faces, finetune, extract, fuse, ensemble, cv, export, bundle, recipe):
    group.register(app)


class Terminated(KeyboardInterrupt):
    """SIGTERM (what SLURM sends at a time limit): unwinds like Ctrl-C, so every stage stops cleanly."""


# Signals received. Typer turns any KeyboardInterrupt into a silent exit code 130, so the
# handlers record what happened for the message below.
_signals: list[int] = []


def _on_signal(signum: int, frame: object) -> None:
    _signals.append(signum)
    raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()


def _interrupted() -> int:
    terminated = signal.SIGTERM in _signals
    what = "terminated (SIGTERM)" if terminated else "interrupted"
    err_console.print(f"{what}: rerun the same command to resume", highlight=False)
    return 143 if terminated else 130


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the app, turning any exception into a one-line error (unless --debug)."""
    args = sys.argv[1:] if argv is None else argv
    _signals.clear()
    previous = {}
    if threading.current_thread() is threading.main_thread():  # signal handlers live there
        previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return _run(args)
    finally:  # a caller that runs main() in-process (a test, a notebook) gets its handlers back
        for sig, handler in previous.items():
            if handler is not None:  # None: installed outside Python, cannot be put back
                signal.signal(sig, handler)


def _run(args: list[str]) -> int:
    try:
        # standalone_mode=False: typer returns the exit code of typer.Exit instead of exiting.
        command = conventions.apply(typer.main.get_command(app))
        args = describe.optional_name(args)  # `fuse --describe` without METHOD: list the heads
        result = command.main(args=args, prog_name="fer-pipeline", standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except (typer.Abort, KeyboardInterrupt):
        return _interrupted()
    except typer.TyperException as e:  # typer's (vendored) click usage errors: bad option etc.
        e.show()
        return e.exit_code
    except Exception as e:  # noqa: BLE001  (the point: no traceback for users)
        if "--debug" in args:
            raise
        message = " ".join(str(e).split()) or type(e).__name__
        err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
        err_console.print("(run with --debug for the traceback)", style="dim")
        return 1
    if _signals:
        return _interrupted()
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
