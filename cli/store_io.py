"""``fer-pipeline store import|export``: HDF5 files in and out of the feature store.

Both commands are added to the ``store`` group of :mod:`cli.extract`; the work is done by
:mod:`pipeline.features.hdf5` (layouts, cache keys, validity masks: see its docstring).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli._common import console, fail, progress_bar
from cli.extract import human_bytes, store_app


class Compression(str, Enum):
    gzip = "gzip"
    lzf = "lzf"
    none = "none"


class DType(str, Enum):
    float16 = "float16"
    float32 = "float32"


def _hop(rate: str) -> float | None:
    """``video`` -> None (one row per frame); ``hop=SECONDS`` -> SECONDS."""
    if rate == "video":
        return None
    key, sep, value = rate.partition("=")
    try:
        if key.strip() == "hop" and sep:
            return float(value)
    except ValueError:
        pass
    raise fail(f"--rate {rate!r}: expected 'video' or 'hop=SECONDS' (e.g. hop=0.01)")


def _split_list(values: list[str]) -> list[str]:
    return [s.strip() for value in values for s in value.split(",") if s.strip()]


def _clips(manifests: Path, splits: list[str]):
    """The clips of the chosen splits (default: all, the AU-only clips too, as `extract` has)."""
    from pipeline.data.manifest import AU_ONLY, SPLITS, load_clips

    choices = (*SPLITS, AU_ONLY)
    chosen = _split_list(splits) or list(choices)
    unknown = [s for s in chosen if s not in choices]
    if unknown:
        raise fail(f"--splits {', '.join(unknown)}: choose from {', '.join(choices)}")
    try:
        return load_clips(manifests, [s for s in chosen if s != AU_ONLY], au_only=AU_ONLY in chosen)
    except (FileNotFoundError, ValueError) as e:
        raise fail(str(e)) from None


@store_app.command("import")
def import_(
    file: Path = typer.Argument(..., help="The HDF5 file of per-clip features."),
    store: Path = typer.Option(..., "--store", help="The Zarr feature store (created if missing)."),
    manifests: Path = typer.Option(..., "--manifests", help="Folder of <split>.jsonl clip manifests."),
    name: str = typer.Option(..., "--name", help="Store array to write, e.g. myface."),
    path: Optional[str] = typer.Option(
        None, "--path", help="Dataset of a clip's rows; placeholders {clip}, {video}, {split}"
        " (default: {clip}, or {clip}/ARRAY in a file that `store export` wrote)."),
    frames_path: Optional[str] = typer.Option(
        None, "--frames-path", help="Dataset of the rows' 1-based frame numbers ([N, D] layout)."),
    rate: str = typer.Option("video", "--rate", help="'video' (a row per frame) or 'hop=SECONDS'."),
    dtype: Optional[DType] = typer.Option(None, "--dtype", help="Cast to this (default: keep float16/32)."),
    splits: list[str] = typer.Option([], "--splits", help="Splits to import: train, val, test,"
                                     " au_only (default: all)."),
    strict: bool = typer.Option(False, "--strict", help="Fail, writing nothing, if the file lacks a clip."),
) -> None:
    """Import per-clip arrays from an HDF5 file as store array NAME (resumable, checksummed)."""
    from pipeline.features.hdf5 import ImportOptions, import_hdf5

    options = ImportOptions(name=name, path=path, frames_path=frames_path, hop=_hop(rate),
                            dtype=dtype.value if dtype else None)
    clips = _clips(manifests, splits)
    with progress_bar() as progress:
        result = import_hdf5(file, store, clips, options, strict=strict, progress=progress)
    table = Table(title=f"import {result.file} -> {store} as {name!r}", title_justify="left",
                  show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    for label, value in (("clips in the manifests", len(clips)), ("written", len(result.written)),
                         ("unchanged", len(result.unchanged)), ("not in the file", len(result.missing)),
                         ("bad datasets", len(result.failed))):
        table.add_row(label, f"{value:,}")
    table.add_row("read", f"{human_bytes(result.bytes_read)} in {result.seconds:.1f} s")
    console.print(table)
    if result.missing:
        console.print(f"not in the file ({len(result.missing)}): {', '.join(result.missing)}",
                      markup=False, highlight=False, soft_wrap=True)
    for bad in result.failed:
        console.print(str(bad), markup=False, highlight=False, soft_wrap=True)
    if result.failed:
        raise fail(f"{len(result.failed)} dataset(s) not imported (listed above); their clips are unchanged")
    if clips and len(result.missing) == len(clips):
        first = clips[0]
        example = result.path.format(clip=first.clip_id, video=first.video_id, split=first.split)
        raise fail(f"{file}: no dataset matches --path {result.path!r} for any clip of the manifests "
                   f"(the first clip's would be {example!r})")


@store_app.command("export")
def export(
    store: Path = typer.Argument(..., help="The Zarr feature store."),
    out: Path = typer.Argument(..., help="The HDF5 file to write (replaced atomically)."),
    arrays: list[str] = typer.Option([], "--arrays", help="Arrays to export (default: all; 'valid' always)."),
    splits: list[str] = typer.Option([], "--splits", help="Splits to export (needs --manifests)."),
    manifests: Optional[Path] = typer.Option(None, "--manifests", help="Folder of <split>.jsonl manifests."),
    compression: Compression = typer.Option(Compression.gzip, "--compression", help="HDF5 filter."),
) -> None:
    """Export arrays to OUT.h5: a group per clip, a dataset per array, with rates and provenance."""
    from pipeline.features.hdf5_export import export_hdf5

    if splits and manifests is None:
        raise fail("--splits needs --manifests (the store does not know the clips' splits)")
    clips = _clips(manifests, splits) if manifests is not None else None
    with progress_bar() as progress:
        result = export_hdf5(store, out, clips, _split_list(arrays) or None, compression.value, progress)
    rate = result.bytes / 1e6 / max(result.seconds, 1e-9)
    console.print(f"exported {result.clips:,} clips ({result.frames:,} frames; arrays "
                  f"{', '.join(result.arrays) or 'none'}) to {result.path}: {human_bytes(result.bytes)} of "
                  f"data, {human_bytes(result.file_bytes)} on disk, {result.seconds:.1f} s ({rate:.1f} MB/s)",
                  highlight=False, soft_wrap=True)
