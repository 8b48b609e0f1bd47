"""``fer-pipeline faces VIDEOS... --out ROOT``: detect, track, align and crop faces from raw videos
into ``ROOT/cropped_aligned/<clip>/00001.jpg`` (the layout ``manifest`` reads), resumably."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli._common import console, fail, progress_bar
from cli.describe import all_option, describe_faces
from pipeline.parallel import SCHEDULER_HELP


def faces(
    videos: list[Path] = typer.Argument(..., help="Video files, or folders searched for videos."),
    out: Path = typer.Option(..., "--out", help="Root to write cropped_aligned/ and faces/ into."),
    weights: Optional[str] = typer.Option(
        None, "--weights", help="MTCNN weights: facenet-pytorch's wheel or a folder of "
        "pnet.pt/rnet.pt/onet.pt (default: $FER_FACE_WEIGHTS, else .cache/faces/ of `make faces-weights`)."),
    onnx: Optional[Path] = typer.Option(
        None, "--onnx", help="Detect with this SCRFD ONNX file (with keypoints, e.g. insightface's "
        "det_10g.onnx) instead of MTCNN."),
    two_person: list[str] = typer.Option(
        [], "--two-person", help="Video name (file stem) showing two people: clips <name>_left and "
        "<name>_right (repeat or comma-separate)."),
    sides_from: Optional[Path] = typer.Option(
        None, "--sides-from", help="Folder searched for <video>_left/_right annotation files (.txt, "
        "Aff-Wild2's): those videos are two-person."),
    all_faces: bool = typer.Option(
        False, "--all-faces", help="Every face track of min_frames or more becomes its own clip "
        "<video>_t1, <video>_t2, ... (groups, TV footage); tracks break at shot cuts and when the "
        "face's look changes."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of FacesConfig fields."),
    set_: list[str] = typer.Option([], "--set", help="key=value override, e.g. scale=1.2 (repeat)."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help=f"Where videos run: {SCHEDULER_HELP}."),
    allow_skips: bool = typer.Option(False, "--allow-skips", help="Exit 0 even when videos were skipped."),
    describe: bool = typer.Option(
        False, "--describe", is_eager=True, expose_value=False, callback=describe_faces,
        help="List the options people change (--all: every option) and exit."),
    describe_all: bool = all_option(),
) -> None:
    """Face crops from raw videos: MTCNN, one identity tracked per clip, five-point alignment."""
    from pipeline import config as config_io
    from pipeline.data.faces.config import FacesConfig
    from stages.faces import run_faces, two_person_videos

    names = [n.strip() for value in two_person for n in value.split(",") if n.strip()]
    if sides_from is not None:
        names += sorted(two_person_videos(sides_from, videos) - set(names))
    cfg = config_io.build(FacesConfig, file=config, sets=set_, options={
        "weights": weights, "two_person": names or None, "scheduler": scheduler,
        "detector": "scrfd" if onnx else None, "onnx": str(onnx) if onnx else None,
        "all_faces": True if all_faces else None})
    with progress_bar() as progress:
        result = run_faces(videos, out, cfg, progress)
    table = Table(title=f"faces -> {result.out}/cropped_aligned", title_justify="left")
    for column in ("video", "status", "frames", "tracks", "cuts", "faces per clip"):
        table.add_column(column)
    for o in result.outcomes:
        fresh = o.status == "done"
        table.add_row(o.video, o.status, f"{o.frames:,}" if o.frames else "-",
                      f"{o.tracks}" if fresh else "-", f"{o.cuts}" if fresh else "-",
                      ", ".join(f"{c} {k:,}" for c, k in o.clips.items()))
    console.print(table)
    console.print(f"track report (every track, its frames and clip; the cuts): "
                  f"{result.out}/faces/<video>.json", markup=False, highlight=False, soft_wrap=True)
    for o in result.outcomes:
        if o.left_out:
            console.print(f"{o.video}: {o.left_out} of its {o.tracks} face tracks are in no clip (other "
                          "people, or too unlike the one kept): --all-faces writes each as its own clip",
                          markup=False, highlight=False, soft_wrap=True)
    for o in result.outcomes:  # a video without a face is no error, but it must not pass unseen
        if o.status == "done" and not any(o.clips.values()):
            what = (f"clip {', '.join(o.clips)} is kept with every frame faceless (no crops)"
                    if o.clips else f"no clip (no face track of {cfg.min_frames} frames or more)")
            console.print(f"{o.video}: no face found in its {o.frames:,} frames: {what}",
                          markup=False, highlight=False, soft_wrap=True)
    for o in result.skipped:
        console.print(f"skipped {o.video}: {o.reason}", markup=False, highlight=False, soft_wrap=True)
    if result.frames:
        console.print(f"{result.frames:,} frames, {result.frames_per_second:.1f} frames/s "
                      "(detection, alignment and writing)", highlight=False)
    if result.skipped and not allow_skips:
        raise fail(f"{len(result.skipped)} video(s) skipped (listed above); "
                   "pass --allow-skips to accept the output without them")


def register(app: typer.Typer) -> None:
    app.command("faces")(faces)
