"""``fer-pipeline cv --method M [--method M2 ...] --store S --manifests D --out OUT``: k-fold
cross-validation of heads and their ensemble over all labelled clips (``stages/cv.py``).

Each head's config is built as ``fuse`` builds it (``--preset``, ``--config``, ``--set``,
``--seed``, ``--select-on``; the same for every method); ``--ensemble-set key=value`` overrides
stage three's :class:`~pipeline.scoring.ensemble.EnsembleConfig` inside each fold. Prints a table:
one row per head output, combination and pipeline step, its macro-F1 per fold, and mean +- std.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from cli._common import console, progress_bar
from cli.fuse import parse_method, parse_preset
from pipeline.training.folds import SelectOn
from pipeline.parallel import SCHEDULER_HELP


def cv(
    methods: List[str] = typer.Option(..., "--method", parser=parse_method, metavar="METHOD",
                                      help="A head to cross-validate (repeat for several)."),
    store: Path = typer.Option(..., "--store", help="Feature store written by `extract`."),
    manifests: Path = typer.Option(..., "--manifests", help="Manifest directory of the store."),
    out: Path = typer.Option(..., "--out", help="CV folder: fold<k>/ and cv.json go here."),
    folds: int = typer.Option(5, "--folds", min=2, help="k: folds of whole videos."),
    fold_seed: int = typer.Option(0, "--fold-seed", help="Seeds the fold assignment."),
    scheduler: str = typer.Option("inprocess", "--scheduler",
                                  help=f"Where folds run: {SCHEDULER_HELP}."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML config of the heads."),
    preset: Optional[str] = typer.Option(None, "--preset", parser=parse_preset, metavar="PRESET",
                                         help="A paper's settings for the heads."),
    sets: List[str] = typer.Option([], "--set", help="Head override, e.g. train.epochs=5."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the heads."),
    select_on: Optional[SelectOn] = typer.Option(None, "--select-on", help="dev (default) or val"
                                                 " (here: the held-out fold itself; optimistic)."),
    ensemble_sets: List[str] = typer.Option([], "--ensemble-set", help="Stage-three override,"
                                            " e.g. bias=false."),
    allow_random_weights: bool = typer.Option(
        False, "--allow-random-weights",
        help="With --preset: accept a store that records random weights for a backbone it"
             " reads (every paper's backbones are pretrained)."),
) -> None:
    """Cross-validate heads and their ensemble: k folds of whole videos over train + val."""
    from pipeline.config import build
    from pipeline.fusion.config import build_config
    from pipeline.scoring.ensemble import EnsembleConfig
    from stages.cv import run_cv

    extra = [f"train.select_on={select_on.value}"] if select_on else []
    configs = [build_config(m, store, manifests, preset=preset, config_file=config,
                            sets=[*sets, *extra], seed=seed,
                            allow_random_weights=allow_random_weights) for m in methods]
    ensemble = build(EnsembleConfig, sets=ensemble_sets)
    with progress_bar() as bar:
        result = run_cv(configs, out, folds, fold_seed, ensemble, scheduler, bar)
    table = Table(title=f"{folds}-fold cross-validation: macro-F1 ({result.trained} fold(s) "
                        f"trained now)", title_justify="left")
    table.add_column("row")
    for record in result.folds:
        table.add_column(f"fold {record['fold']}", justify="right")
    table.add_column("mean +- std", justify="right")
    for name, stats in result.summary.items():
        values = [stats["per_fold"].get(record["fold"]) for record in result.folds]
        cells = [f"{v:.4f}" if v is not None else "-" for v in values]
        table.add_row(name, *cells, f"{stats['mean']:.4f} +- {stats['std']:.4f}",
                      style="bold" if name == result.final else None)
    console.print(table)
    for r in result.folds:
        if r["ensemble_error"]:
            console.print(f"[yellow]no ensemble[/] fold {r['fold']}: {r['ensemble_error']}",
                          highlight=False, soft_wrap=True)
    console.print(f"cv: {result.path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("cv")(cv)
