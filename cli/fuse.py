"""``fer-pipeline fuse --method M --store S --manifests D --out RUNS``: stage two, one head.

Builds the run config with :func:`pipeline.fusion.config.build_config` (the method's defaults,
``--preset``, ``--config FILE.toml``, ``--set key=value``, then ``--seed``; later wins), trains
into ``RUNS/<--name or method>/``, prints one line per epoch and a final table of validation
macro-F1 per output. Rerunning the same command resumes an interrupted run; a changed config is
refused unless ``--restart`` or ``--force``. ``--select-on`` chooses where the epoch (and a head's
fitted choices) are selected (``train.select_on``: the training split's dev slice by default);
``--bag K`` trains a bag of K bootstrap variants (``bag.k``; see ``stages/fuse.py``).

The head registry imports torch, so ``--method`` is checked against it only when this command
runs (a wrong name lists the registered heads), and ``fuse --help`` lists the registered heads
only when it is shown (:func:`cli.describe.registry_help`): every other ``fer-pipeline`` command starts
without importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cli._common import console, progress_bar
from cli.describe import all_option, describe_method, registry_help
from pipeline.training.folds import SelectOn
from pipeline.fusion.presets import PRESETS
from pipeline.progress import ProgressEvent, ProgressFn
from pipeline.suggest import did_you_mean


def parse_method(value: str) -> str:
    """Check ``--method`` against the head registry (imported here, when the command runs)."""
    from pipeline.fusion.heads import registry

    if value not in registry():
        raise typer.BadParameter(f"{value!r} is not a registered head; choose from "
                                 f"{', '.join(sorted(registry()))}{did_you_mean(value, registry())}")
    return value


def _method_help() -> str:
    """``--method``'s help: the heads registered when it is shown (the registry, not a list
    written here, so a head added to pipeline/fusion/heads/ or by an entry point appears by
    itself)."""
    from pipeline.fusion.heads import registry

    return f"The head to train: {', '.join(sorted(registry()))}."


def parse_preset(value: str) -> str:
    if value not in PRESETS:
        raise typer.BadParameter(f"{value!r} is not a preset; choose from {', '.join(PRESETS)}"
                                 f"{did_you_mean(value, PRESETS)}")
    return value


def _epoch_line(info: dict) -> str:
    scores = " ".join(f"{k[3:]} {v:.3f}" for k, v in info.items() if k.startswith("f1 "))
    return (f"epoch {info['epoch']:>3}  loss {info['loss']:.4f}  "
            f"{info.get('on', 'val')} F1 {scores}  "
            f"best {info['best']:.3f}  lr {info['lr']:.3g}  {info['frames/s']:.0f} frames/s  "
            f"{info['s']:.1f} s (data {info['data s']:.2f} s)")


def _with_epoch_lines(bar: ProgressFn) -> ProgressFn:
    """Print a line per epoch; the bar itself shows only how many epochs are done."""

    def progress(event: ProgressEvent) -> None:
        if event.task == "epochs" and "epoch" in event.info:
            console.print(_epoch_line(event.info), highlight=False, soft_wrap=True)
            event = ProgressEvent(event.task, event.advance, event.total)
        bar(event)

    return progress


def fuse(
    method: str = typer.Option(..., "--method", parser=parse_method, metavar="METHOD",
                               help="The head to train: a registered head (listed by --help)."),
    store: Path = typer.Option(..., "--store", help="Feature store written by `extract`."),
    manifests: Path = typer.Option(..., "--manifests",
                                   help="Manifest directory the store was extracted from."),
    out: Path = typer.Option(..., "--out", help="Runs folder: the run goes to OUT/<name>."),
    config: Optional[Path] = typer.Option(None, "--config",
                                          help="TOML config, e.g. a run's config.toml."),
    preset: Optional[str] = typer.Option(None, "--preset", parser=parse_preset, metavar="PRESET",
                                         help="A paper's settings, applied before --config and "
                                              f"--set: {', '.join(PRESETS)}."),
    sets: List[str] = typer.Option([], "--set", help="Override, e.g. train.lr=0.0005, head.dim=64."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (weights and sampling)."),
    name: Optional[str] = typer.Option(None, "--name", help="Run folder name (default: method)."),
    select_on: Optional[SelectOn] = typer.Option(
        None, "--select-on", help="Where the epoch and the head's own choices are selected: dev (a"
        " held-out slice of the training clips; the default) or val (optimistic val scores, and"
        " every output says so)."),
    bag: Optional[int] = typer.Option(None, "--bag", min=2, help="Train a bag of K variants, each"
                                      " on a bootstrap resample of the training videos, and write"
                                      " their averaged probabilities (bag.k)."),
    restart: bool = typer.Option(False, "--restart", help="Discard an existing run of this name."),
    force: bool = typer.Option(False, "--force",
                               help="Continue an existing run although its config differs."),
    allow_manifest_mismatch: bool = typer.Option(
        False, "--allow-manifest-mismatch",
        help="Train although the manifests differ from those the store was extracted from."),
    describe: Optional[str] = typer.Option(
        None, "--describe", metavar="METHOD", is_eager=True, expose_value=False,
        callback=describe_method, help="List head METHOD's options and the shared options people"
        " change (--all: every one) and exit; without METHOD, list the heads and presets."),
    describe_all: bool = all_option(),
    allow_random_weights: bool = typer.Option(
        False, "--allow-random-weights",
        help="With --preset: train although the store records random weights for a backbone"
             " it reads (every paper's backbones are pretrained; its features are then untrained)."),
    allow_stand_ins: bool = typer.Option(
        False, "--allow-stand-ins",
        help="With --preset: accept a smaller model of the paper's backbone family in place of the"
             " paper's (ResNet-18 for ResNet-50, ...: docs/recipes.md; demo runs)."),
) -> None:
    """Train a fusion head on cached features; write per-frame probabilities for val and test."""
    from pipeline import epoch_log
    from pipeline.fusion.config import build_config
    from stages.fuse import fuse as run_fuse

    log, sets = epoch_log.split_sets(sets)  # log.* change no number: not part of the run's config
    options = [*([f"train.select_on={select_on.value}"] if select_on else []),
               *([f"bag.k={bag}"] if bag else [])]
    run_config = build_config(method, store, manifests, preset=preset, config_file=config,
                              sets=[*sets, *options], seed=seed,
                              allow_random_weights=allow_random_weights,
                              allow_stand_ins=allow_stand_ins)
    with progress_bar() as bar, epoch_log.use(log):
        result = run_fuse(run_config, out, name=name, progress=_with_epoch_lines(bar),
                          restart=restart, force=force,
                          allow_manifest_mismatch=allow_manifest_mismatch)
    if result.already_complete:
        console.print(f"{result.run_dir}: already complete, nothing to do", highlight=False,
                      soft_wrap=True)
    elif result.resumed_from:
        console.print(f"resumed after epoch {result.resumed_from}", highlight=False)
    table = Table(title=f"{result.method}: validation", title_justify="left")
    if not result.val_macro_f1:
        console.print("no validation clips: no val scores", highlight=False)
        return
    table.add_column("output")
    table.add_column("val macro-F1", justify="right")
    for output in result.outputs:
        mark = " (primary)" if output == result.primary else ""
        table.add_row(output + mark, f"{result.val_macro_f1[output]:.4f}")
    console.print(table)
    if result.val_au is not None:  # a multi-task run: its AU output at threshold 0.5
        console.print(f"AU: mean F1 {result.val_au['mean_f1']:.4f}, accuracy "
                      f"{result.val_au['accuracy']:.4f} (threshold 0.5)", highlight=False)
    if result.val_va is not None:  # a run with VA: CCC of its VA output
        console.print(f"VA: mean CCC {result.val_va['mean_ccc']:.4f} (valence "
                      f"{result.val_va['ccc_valence']:.4f}, arousal "
                      f"{result.val_va['ccc_arousal']:.4f})", highlight=False)
    record = result.metrics  # the run's record (metrics.json)
    if record.bag is not None:
        for i, member in enumerate(record.bag["members"]):
            console.print(f"member {i}: val macro-F1 {member['val_macro_f1'][result.primary]:.4f}"
                          f" (best epoch {member['best_epoch']})", highlight=False)
        console.print(f"bag of {len(record.bag['members'])} (soft voting); run directory"
                      f" {result.run_dir}", highlight=False, soft_wrap=True)
    else:
        console.print(f"best epoch {result.best_epoch} of {result.epochs_run} "
                      f"({record.stopped}); run directory {result.run_dir}",
                      highlight=False, soft_wrap=True)
    console.print(f"selected on: {record.selected_on}", highlight=False)
    if record.grid is not None:
        best = record.grid["best"]
        console.print(f"proportional rule: m = {best[0]} (audio), n = {best[1]} (image)",
                      highlight=False)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("fuse", cls=registry_help("method", _method_help))(fuse)
