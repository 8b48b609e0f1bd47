"""``fer-pipeline bundle SCORES RUN... --out PIPELINE`` and ``fer-pipeline predict INPUTS
--pipeline PIPELINE --out DIR``: a finished pipeline as one folder, applied to new videos
(:mod:`pipeline.bundle.build`, :mod:`stages.predict`)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from cli._common import console, err_console, progress_bar
from pipeline.bundle.format import BUNDLE_JSON, MODEL_CARD, read_json


def bundle(
    sources: List[Path] = typer.Argument(..., help="An `ensemble` output folder and its member"
                                         " run directories, or one run directory."),
    out: Path = typer.Option(..., "--out", help="The pipeline folder to write."),
) -> None:
    """Write a self-contained, versioned pipeline folder (weights, decisions, model card)."""
    from pipeline.bundle.build import build_bundle  # (torch: not imported for --help)

    path = build_bundle(sources, out)
    record = read_json(path / BUNDLE_JSON)
    console.print(f"{path}: members {', '.join(record['members'])}; model card"
                  f" {path / MODEL_CARD}", highlight=False, soft_wrap=True)
    for name in record["card"]["random_backbones"]:
        err_console.print(f"WARNING: backbone {name!r} has RANDOM WEIGHTS: this pipeline's"
                          " predictions are not those of a trained model", highlight=False)


def predict(
    inputs: List[Path] = typer.Argument(..., help="Videos, folders of videos, or folders of"
                                        " face crops (00001.jpg, ...)."),
    pipeline: Path = typer.Option(..., "--pipeline", help="A folder written by `bundle`."),
    out: Path = typer.Option(..., "--out", help="Folder for <clip>.csv/.parquet/.json."),
    store: Optional[Path] = typer.Option(None, "--store", help="Feature store to extract into"
                                         " and reuse (default: OUT/.work/features.zarr)."),
    videos: Optional[Path] = typer.Option(None, "--videos", help="For crop folders: the folder"
                                          " of their videos (audio, frame rate, frame count)."),
    fps: float = typer.Option(25.0, "--fps", help="Frame rate of crop folders without a video."),
    scheduler: str = typer.Option("inprocess", "--scheduler", help="As `extract --scheduler`."),
) -> None:
    """Per-frame expressions of new videos with a bundled pipeline (resumable per video)."""
    from stages.predict import run_predict  # (torch: not imported for --help)

    with progress_bar() as progress:
        result = run_predict(inputs, pipeline, out, store, videos, fps, scheduler, progress)
    console.print(f"{out}: {len(result.clips)} clip(s), {len(result.reused)} complete already;"
                  f" {result.frames} frames predicted ({result.faces} with a face) in"
                  f" {result.seconds:.1f} s", highlight=False, soft_wrap=True)
    for note in result.notes:  # as `extract` says it: one line per clip
        console.print(f"short audio {note}", markup=False, highlight=False, soft_wrap=True)
    for note in result.timing:
        console.print(note, markup=False, highlight=False, soft_wrap=True)
    for name in result.random_backbones:
        err_console.print(f"WARNING: backbone {name!r} has RANDOM WEIGHTS: these predictions are"
                          " not those of a trained model", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``bundle`` and ``predict`` to the root app."""
    app.command("bundle")(bundle)
    app.command("predict")(predict)
