"""``fer-pipeline extract`` (stage one) and ``fer-pipeline store info|verify`` (the feature store).

``extract`` builds an :class:`~pipeline.features.config.ExtractConfig` from the defaults, then ``--config``
(TOML), then ``--set key=value``, then the explicit options, and runs the stage with a progress
bar. It prints a summary, a loud warning for every extractor on random weights and one line per
skipped clip, and exits 1 when clips were skipped unless ``--allow-skips``. The run report is
written to ``STORE.meta/reports/extract-<UTC time>.json`` (beside the store).

The extractor modules (timm, torchaudio) are imported only when a command needs them (the
registry lists their names without importing them), so that ``fer-pipeline --help`` and the
other commands start fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli._common import console, fail, progress_bar
from cli.describe import all_option, describe_extractor
from pipeline.features import extractors as extractor_registry
from pipeline.features.config import DEFAULT_EXTRACTORS, Precision
from pipeline.parallel import SCHEDULER_HELP
from pipeline.progress import ProgressEvent

AFFWILD2_FRAMES = 2_700_000  # frames of the real Aff-Wild2: what store info projects sizes to


def parse_weights(values: list[str]) -> dict[str, str]:
    weights = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise fail(f"--weights {value!r}: expected NAME=PATH")
        weights[name.strip()] = path.strip()
    return weights


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def _warn_random(names: list[str]) -> None:
    for name in names:
        console.print(
            f"[bold red]WARNING: extractor {name!r} ran with RANDOM WEIGHTS (no --weights {name}=PATH): "
            "its features are not those of a trained backbone.[/]", highlight=False)


def _print_job_script(scheduler: str, manifests: Path | None, store: Path | None, shard_frames: int) -> None:
    """Print what ``--scheduler slurm:...`` would submit, with notes on what is filled in later.

    The notes are comment lines after the shebang, so that the output stays a script ``sbatch``
    takes (it reads ``#SBATCH`` lines up to the first command). The manifests and the store are
    not in the script: the jobs only start dask workers, and the submitting ``extract`` sends them
    the shards, so neither needs to exist yet.
    """
    from pipeline.parallel import (SCHEDULER_PLACEHOLDER, WORKER_NAME_PLACEHOLDER, parse_scheduler,
                                   slurm_job_script)

    if not scheduler.strip().startswith("slurm:"):
        raise fail("--print-job-script needs --scheduler slurm:N[,...] (e.g. slurm:4,gres=gpu:1)")
    jobs = parse_scheduler(scheduler).workers
    shebang, _, rest = slurm_job_script(scheduler).partition("\n")
    notes = [
        f"`fer-pipeline extract --scheduler {scheduler}` submits this script {jobs} time(s), one job "
        "per dask worker; at submission dask-jobqueue puts in",
        f"  {SCHEDULER_PLACEHOLDER}: the address of the dask scheduler `extract` starts on the "
        "submitting host",
        f"  {WORKER_NAME_PLACEHOLDER}: a name per job",
        f"Not in this script: the shards of clips (up to about {shard_frames} frames each; how many "
        f"depends on the manifests in {manifests or '<MANIFESTS>'})",
        f"reach the workers as tasks and are written into the store {store or '<STORE>'}: every node "
        "must see both, and the frames, at the same paths.",
    ]
    script = "\n".join([shebang, *(f"# {line}" for line in notes), rest])
    console.print(script, markup=False, highlight=False, soft_wrap=True)


def extract(
    manifests: Optional[Path] = typer.Option(
        None, "--manifests", help="Folder of <split>.jsonl clip manifests (required, but not by "
        "--print-job-script)."),
    store: Optional[Path] = typer.Option(
        None, "--store", help="The Zarr feature store (created if missing; required, but not by "
        "--print-job-script)."),
    extractor: list[str] = typer.Option(
        [], "--extractor", "-e", help=f"Extractor to run (repeat): {', '.join(extractor_registry.names())}. "
             f"Default: {', '.join(DEFAULT_EXTRACTORS)}."),
    weights: list[str] = typer.Option(
        [], "--weights", help="NAME=PATH: weights file of an extractor (repeat)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of ExtractConfig fields."),
    set_: list[str] = typer.Option(
        [], "--set", help="key=value override of the config, e.g. configs.swin.crop_pct=1.0 (repeat)."),
    precision: Optional[Precision] = typer.Option(
        None, "--precision", help="Autocast; auto: bf16 where the device has it natively, else fp32."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:N or auto."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Frames per forward."),
    audio_stride: Optional[int] = typer.Option(
        None, "--audio-stride", min=1, help="Audio embeddings every K-th frame, interpolated between."),
    loader_threads: Optional[int] = typer.Option(
        None, "--loader-threads", min=1, help="Decode threads per worker."),
    scheduler: Optional[str] = typer.Option(
        None, "--scheduler", help=f"Where shards run: {SCHEDULER_HELP}."),
    splits: list[str] = typer.Option([], "--splits", help="Splits to extract (repeat or comma-separate)."),
    allow_skips: bool = typer.Option(False, "--allow-skips", help="Exit 0 even when clips were skipped."),
    print_job_script: bool = typer.Option(
        False, "--print-job-script", help="With --scheduler slurm:...: print the batch script"
        " each job would run, submit nothing and exit."),
    describe: Optional[str] = typer.Option(
        None, "--describe", metavar="NAME", is_eager=True, expose_value=False,
        callback=describe_extractor, help="List extractor NAME's options (type, default, meaning) and"
        " exit; without NAME, list the extractors."),
    describe_all: bool = all_option(),
) -> None:
    """Run frozen extractors over every clip and cache per-frame features in the store (resumable)."""
    from pipeline import config as config_io
    from pipeline.features.config import ExtractConfig
    from stages.extract import run_extract

    split_names = [s.strip() for value in splits for s in value.split(",") if s.strip()]
    cfg = config_io.build(ExtractConfig, file=config, sets=set_, options={
        "extractors": list(extractor) or None, "weights": parse_weights(weights) or None,
        "precision": precision.value if precision else None, "device": device,
        "batch_size": batch_size, "audio_stride": audio_stride, "loader_threads": loader_threads,
        "scheduler": scheduler, "splits": split_names or None, "allow_skips": allow_skips or None})
    if print_job_script:  # the scheduler may come from --config or --set too
        _print_job_script(cfg.scheduler, manifests, store, cfg.shard_frames)
        return
    missing = [name for name, value in (("--manifests", manifests), ("--store", store)) if value is None]
    if missing:
        raise fail(f"extract needs {' and '.join(missing)} (only --print-job-script runs without them)")

    with progress_bar() as progress:
        result = run_extract(cfg, manifests, store, progress)

    table = Table(title=f"extract -> {result.store}", title_justify="left", show_header=False)
    table.add_column(justify="left")
    table.add_column(justify="right")
    table.add_row("clips", f"{result.clips:,}")
    table.add_row("  computed", f"{result.clips_done:,}")
    table.add_row("  complete already", f"{result.clips_reused:,}"
                  + (f" ({result.clips_by_other} by another process)" if result.clips_by_other else ""))
    table.add_row("  skipped (bad input)", f"{len(result.skipped):,}")
    table.add_row("  without audio", f"{result.clips_without_audio:,}")
    table.add_row("frames computed", f"{result.frames:,}")
    table.add_row("frames/s", f"{result.frames_per_second:,.1f}")
    table.add_row("arrays written / reused", f"{result.arrays_written:,} / {result.arrays_reused:,}")
    table.add_row("time (compute / total)", f"{result.seconds:.1f} s / {result.seconds_total:.1f} s")
    table.add_row("scheduler", result.scheduler)
    table.add_row("precision", result.precision)
    console.print(table)
    keys = Table(title="extractors", title_justify="left")
    for column in ("name", "cache key", "weights"):
        keys.add_column(column)
    for name, key in result.extractors.items():
        source = cfg.weights.get(name) or ("[bold red]RANDOM[/]" if name in result.random_weights else "-")
        keys.add_row(name, key, source)
    console.print(keys)
    if result.root_rebuilt:
        console.print(f"rebuilt {Path(result.store) / 'zarr.json'} ({result.root_rebuilt}) from the run "
                      "reports and the manifests", markup=False, highlight=False, soft_wrap=True)
    if result.nothing_to_do:
        console.print(f"nothing to do: every array of the {result.clips:,} clips is complete (markers "
                      "and chunk files checked; `fer-pipeline store verify` re-reads every byte); "
                      "no model was built", highlight=False)
    _warn_random(result.random_weights)
    for note in result.notes:
        console.print(f"short audio {note}", markup=False, highlight=False, soft_wrap=True)
    for skip in result.skipped:
        console.print(f"skipped {skip}", markup=False, highlight=False, soft_wrap=True)
    if result.report is not None:
        console.print(f"run report: {result.report}", highlight=False, soft_wrap=True)
    if not result.ok:
        raise fail(f"{len(result.skipped)} clip(s) skipped for bad input (listed above); "
                   "pass --allow-skips to accept a store without them")


store_app = typer.Typer(help="Inspect and check a feature store.", no_args_is_help=True)


@store_app.command("info")
def info(store: Path = typer.Argument(..., help="The Zarr feature store.")) -> None:
    """Clips, arrays (shapes, dtypes, cache keys), extractors and size on disk."""
    from pipeline.features import store_inspect
    from pipeline.features.store import FeatureStore

    summary = store_inspect.summarize(FeatureStore(store))
    console.print(f"store {summary.path}: {summary.clips:,} clips, {summary.frames:,} frames, "
                  f"{summary.clips_without_audio:,} without audio, {human_bytes(summary.size_bytes)} on disk",
                  highlight=False, soft_wrap=True)
    if summary.frames:
        console.print(f"at {AFFWILD2_FRAMES:,} frames (Aff-Wild2) it would take about "
                      f"{human_bytes(summary.projected_bytes(AFFWILD2_FRAMES))} "
                      f"({summary.size_bytes / summary.frames:,.0f} B per frame)", highlight=False)
    arrays = Table(title="arrays", title_justify="left")
    for column in ("array", "clips", "incomplete", "row shape", "dtype", "B/frame", "cache keys"):
        arrays.add_column(column, overflow="fold")
    for entry in summary.arrays.values():
        arrays.add_row(entry.name, f"{entry.complete:,}", f"{entry.incomplete:,}",
                       ", ".join(str(list(s)) for s in sorted(entry.row_shapes)),
                       ", ".join(sorted(entry.dtypes)), f"{entry.bytes_per_frame:,.1f}",
                       ", ".join(sorted(entry.cache_keys)))
    console.print(arrays)
    old = [e.name for e in summary.arrays.values() if e.without_dimension_names]
    if old:
        console.print(f"note: {', '.join(old)} were written before arrays carried dimension names: "
                      "fer-pipeline reads them, xarray cannot (re-extract into a new store for xarray)",
                      highlight=False, soft_wrap=True)
    extractors = Table(title="extractors", title_justify="left")
    for column in ("name", "kind", "cache key", "precision", "weights"):
        extractors.add_column(column)
    random = []
    for name, described in sorted(summary.extractors.items()):
        if described.get("random_weights"):
            random.append(name)
        weights = described.get("weights") or ("[bold red]RANDOM[/]" if described.get("random_weights") else "-")
        extractors.add_row(name, str(described.get("kind")), str(described.get("cache_key")),
                           str(described.get("precision")), weights)
    console.print(extractors)
    for name in random:
        console.print(f"[bold red]WARNING: {name!r} features in this store come from RANDOM WEIGHTS.[/]",
                      highlight=False)
    for line in summary.damaged:  # left out of the tables above
        console.print(f"damaged: {line}", markup=False, highlight=False, soft_wrap=True)


@store_app.command("verify")
def verify(store: Path = typer.Argument(..., help="The Zarr feature store.")) -> None:
    """Re-read and re-hash every array; list each incomplete or corrupt one and exit 1 if any.

    Corrupt arrays are noted in STORE.meta/corrupt, so that the next `extract` recomputes them.
    """
    from pipeline.features import store_inspect
    from pipeline.features.store import FeatureStore

    handle = FeatureStore(store)
    clip_ids = store_inspect.listed_clips(handle)  # with those whose folder or zarr.json is gone
    problems = []
    with progress_bar() as progress:
        progress(ProgressEvent("verifying clips", total=len(clip_ids)))
        for clip_id in clip_ids:
            problems.extend(store_inspect.verify(handle, [clip_id]))
            progress(ProgressEvent("verifying clips", advance=1))
    for problem in problems:
        console.print(str(problem), markup=False, highlight=False, soft_wrap=True)
    if problems:
        raise fail(f"{len(problems)} incomplete or corrupt array(s) in {store}; "
                   "rerun `fer-pipeline extract` to recompute them")
    console.print(f"ok: {len(clip_ids):,} clips, every array complete and matching its checksum",
                  highlight=False)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("extract")(extract)
    app.add_typer(store_app, name="store")
