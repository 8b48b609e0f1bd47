"""``fer-pipeline finetune --backbone timm --model M --manifests D --out DIR``: stage 0.

Trains the backbone on the training split's labelled clips (epoch selected on the train-dev slice)
and writes a weights folder that ``extract -e NAME --weights NAME=DIR`` loads with its recorded
preprocessing (NAME: the backbone's family, e.g. timm, iresnet, tdnn, swin_audio, hf_audio). Prints a
line per epoch and a summary. Under ``torchrun`` it trains with DDP (see the README's sbatch lines).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional

import typer

from cli._common import console, progress_bar
from cli.describe import all_option, backbone_help, describe_finetune, registry_help
from pipeline.progress import ProgressEvent, ProgressFn


def _with_epoch_lines(bar: ProgressFn) -> ProgressFn:
    def progress(event: ProgressEvent) -> None:
        if event.task == "epochs" and "epoch" in event.info:
            i = event.info
            console.print(f"epoch {i['epoch']:>3}  loss {i['loss']:.4f}  train-dev F1 "
                          f"{i['dev_f1']:.3f}  best {i['best']:.3f}  lr {i['lr']:.3g}  "
                          f"{i['frames_per_s']:.0f} frames/s  {i['s']:.1f} s",
                          highlight=False, soft_wrap=True)
            event = ProgressEvent(event.task, event.advance, event.total)
        bar(event)

    return progress


def finetune(
    manifests: Optional[Path] = typer.Option(None, "--manifests", help="Manifest directory (its training split is read)."),
    out: Path = typer.Option(..., "--out", help="Weights folder to write (working files go to OUT.train/)."),
    backbone: Optional[str] = typer.Option(None, "--backbone", help="The backbone (listed from the registry when shown)."),
    model: Optional[str] = typer.Option(None, "--model", help="timm model name (backbone timm)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Initial weights (file or folder); default: seeded random."),
    preset: Optional[str] = typer.Option(None, "--preset", help="A paper's fine-tuning settings "
                                         "and model: kim2023, jeong2022, jin2021, yu2025, sun2026, "
                                         "yu2026 (before --config, --set)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config."),
    sets: List[str] = typer.Option([], "--set", help="Override, e.g. lr=3e-5, epochs=10, augment.hflip=0."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed (classifier, sampling, augmentation)."),
    restart: bool = typer.Option(False, "--restart", help="Discard an unfinished fine-tune into OUT."),
    static: Optional[str] = typer.Option(None, "--static", help="Train on a static expression "
                                         "dataset instead of --manifests: NAME:ROOT, NAME one of "
                                         "affectnet, rafdb, fer2013, expw (docs/static-datasets.md)."),
    static_store: Optional[Path] = typer.Option(None, "--static-store", help="Where --static writes "
                                                "its face crops and manifests (default OUT.static/)."),
    describe: bool = typer.Option(
        False, "--describe", is_eager=True, expose_value=False, callback=describe_finetune,
        help="List the backbones, presets and the options people change (--all: every option) and exit."),
    describe_all: bool = all_option(),
    allow_random_weights: bool = typer.Option(
        False, "--allow-random-weights",
        help="With --preset: start from seeded random weights where the paper starts from"
             " pretrained ones (no --weights)."),
    allow_stand_ins: bool = typer.Option(
        False, "--allow-stand-ins",
        help="With --preset: accept the smaller model of the paper's family in place of the"
             " paper's (ResNet-18 for ResNet-50, ...: docs/recipes.md; demo runs)."),
    allow_other_model: bool = typer.Option(
        False, "--allow-other-model",
        help="With --preset: fine-tune a --model that is not the paper's with the paper's"
             " settings (said in a line; the run is then not the paper's)."),
) -> None:
    """Fine-tune a face or audio backbone on the training clips (stage 0); write a weights folder."""
    from pipeline import epoch_log
    from pipeline.finetune.config import build_config
    from stages.finetune import finetune as run

    if (manifests is None) == (static is None):
        raise typer.BadParameter("give one of --manifests and --static")
    if static is not None:
        manifests = static_data(static, static_store or out.with_name(out.name + ".static"))
    log, sets = epoch_log.split_sets(sets)  # log.* change no number: not part of the config
    notes: list[str] = []
    run_config = build_config(manifests, backbone=backbone, model=model, weights=weights,
                              config_file=config, sets=sets, seed=seed, preset=preset,
                              allow_random_weights=allow_random_weights,
                              allow_stand_ins=allow_stand_ins, allow_other_model=allow_other_model,
                              notes=notes)
    if os.environ.get("RANK", "0") != "0":  # a DDP process other than rank 0: rank 0 reports
        with epoch_log.use(log):
            run(run_config, out, restart=restart)
        return
    for line in notes:  # a model in place of the preset's paper's: said before training
        console.print(f"note: {line}", highlight=False, soft_wrap=True, markup=False)
    with progress_bar() as bar, epoch_log.use(log):
        result = run(run_config, out, progress=_with_epoch_lines(bar), restart=restart)
    r = result.record
    if result.already_complete:
        console.print(f"{out}: already complete, nothing to do", highlight=False, soft_wrap=True)
    elif result.resumed_from:
        console.print(f"resumed after epoch {result.resumed_from}", highlight=False)
    console.print(f"{r.family} {r.model}: epoch {r.epoch} of {r.epochs_run} selected on {r.selected_on}"
                  f" (macro-F1 {r.selection_score:.4f}); {len(r.clips['train'])} clips trained, "
                  f"{len(r.clips['dev'])} selected; {result.seconds:.1f} s", highlight=False,
                  soft_wrap=True)
    for line in result.warnings:
        console.print(f"warning: {line}", highlight=False, soft_wrap=True)
    name = r.family  # the extractor that loads the folder
    console.print(f"weights: {out}  (extract -e {name} --weights {name}={out})", highlight=False,
                  soft_wrap=True)


MAX_LINES = 20  # rejection lines printed; the rest are in report.json


def static_data(spec: str, store: Path) -> Path:
    """Write (or keep) the static dataset ``spec`` as the manifest directory ``store``; print its
    counts and one line per rejection. Under torchrun the store must be prepared already (the
    processes would race to write it)."""
    from stages.static_data import prepare_static

    prepared = prepare_static(spec, store, write=int(os.environ.get("WORLD_SIZE", "1")) <= 1)
    if os.environ.get("RANK", "0") != "0":
        return store
    report = prepared.report
    if prepared.already:
        console.print(f"{store}: already prepared from the same files", highlight=False,
                      soft_wrap=True)
    for line in [r["file"] + (f":{r['line']}" if r["line"] else "") + f": {r['reason']}"
                 for r in report["rejections"][:MAX_LINES]]:
        console.print(f"rejected: {line}", highlight=False, soft_wrap=True, markup=False)
    more = len(report["rejections"]) - MAX_LINES
    if more > 0:
        console.print(f"... and {more} more rejections in {store / 'report.json'}", highlight=False,
                      soft_wrap=True)
    unmapped = {f"{split}/{name}": n for split, c in report["counts"].items()
                for name, n in c["unmapped"].items()}
    console.print(f"{report['dataset']}: frames {report['frames']}, rejected "
                  f"{len(report['rejections'])}, unmapped {unmapped or 'none'}; "
                  f"manifests: {store}", highlight=False, soft_wrap=True, markup=False)
    return store


def static_data_command(
    spec: str = typer.Argument(..., help="NAME:ROOT, NAME one of affectnet, rafdb, fer2013, expw."),
    out: Path = typer.Option(..., "--out", help="Manifest directory to write (face crops in OUT/frames/)."),
) -> None:
    """Write a static expression dataset's face crops and manifests (finetune --manifests OUT)."""
    static_data(spec, out)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("finetune", cls=registry_help("backbone", backbone_help))(finetune)
    app.command("static-data")(static_data_command)
