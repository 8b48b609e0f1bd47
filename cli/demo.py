"""``fer-pipeline demo-data``: write the demo dataset (see :mod:`pipeline.data.synthetic`)."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.table import Table

from cli._common import console, fail, progress_bar
from pipeline.data.synthetic import MIN_CLIPS, MIN_FRAMES, TEST_LIST, DemoConfig, generate
from pipeline.errors import PipelineError

_DEFAULTS = DemoConfig()


def demo_data(
    out: Path = typer.Argument(..., help="Dataset root: empty, new, or a previous demo."),
    clips: int = typer.Option(
        _DEFAULTS.clips, "--clips", help=f"Clips in all splits (>= {MIN_CLIPS})."),
    frames: int = typer.Option(
        _DEFAULTS.frames, "--frames", help=f"Frames per clip (>= {MIN_FRAMES})."),
    seed: int = typer.Option(_DEFAULTS.seed, "--seed", help="Same seed, same bytes."),
    size: int = typer.Option(_DEFAULTS.size, "--size", help="Face crop side in pixels (even)."),
    noise: float = typer.Option(
        _DEFAULTS.noise, "--noise", help="Fraction of labelled frames contradicting their cues."),
    missing_faces: float = typer.Option(
        None, "--missing-faces",
        help="Share of every clip's frames without a face crop (default: a few in half the clips)."),
    face_cue: str = typer.Option(
        _DEFAULTS.face_cue, "--face-cue",
        help="What shows the class pair on the face: colour (background hue) or geometry (mouth "
             "shape under random colours; a random network cannot read it)."),
) -> None:
    """Write a small Aff-Wild2-layout dataset whose labels need both face and audio."""
    try:
        config = DemoConfig(clips=clips, frames=frames, seed=seed, size=size, noise=noise,
                            missing_faces=missing_faces, face_cue=face_cue)
        start = time.perf_counter()
        with progress_bar() as progress:
            summary = generate(out, config, progress)
        seconds = time.perf_counter() - start
    except PipelineError as e:
        raise fail(str(e)) from None
    table = Table(title=f"demo dataset {out}")
    for column in ("split", "clips", "frames"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, count in summary.clips.items():
        table.add_row(split, str(count), str(summary.frames[split]))
    console.print(table)
    console.print(
        f"{summary.videos} videos, {summary.labelled_frames} labelled frames "
        f"({summary.noisy_frames} disagree with their cues), {summary.missing_frames} frames "
        f"without a face crop; test clips listed in {out / TEST_LIST}"
    )
    console.print(f"{summary.bytes / 1e6:.1f} MB on disk, written in {seconds:.1f} s")


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("demo-data")(demo_data)
