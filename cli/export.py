"""``fer-pipeline export RUN --format csv|parquet [--split val]``: a run's per-frame predictions
as tidy rows (clip, index, frame, time, face, the 8 class probabilities by name, label) for other
tools; see :mod:`stages.export`."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from cli._common import console, progress_bar
from stages.export import FORMATS, export_predictions

Format = Enum("Format", {name: name for name in FORMATS}, type=str)  # the choices of --format


def export(
    run_dir: Path = typer.Argument(..., help="A run directory written by `fuse`."),
    fmt: Format = typer.Option(..., "--format", help="File format."),
    split: str = typer.Option("val", "--split", help="Split to export (val or test)."),
    output: Optional[str] = typer.Option(None, "--output", help="Run output (default: primary)."),
    out: Optional[Path] = typer.Option(None, "--out", help="File to write (default:"
                                       " ./<run>.<split>.<output>.<format>)."),
    manifests: Optional[Path] = typer.Option(None, "--manifests", help="Manifest directory"
                                             " (default: the one in the run's config.toml)."),
) -> None:
    """Write a run's per-frame predictions as one row per frame (CSV or Parquet)."""
    with progress_bar() as progress:
        result = export_predictions(run_dir, fmt.value, split, output, out, manifests, progress)
    console.print(f"{result.path}: {result.rows} rows, {result.clips} {split} clips"
                  f" (output {result.output})", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``export`` to the root app."""
    app.command("export")(export)
