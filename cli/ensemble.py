"""Stage-three commands: ``ensemble`` (combine, score, report, submit), ``score``, and
``submission check``.

``ensemble`` builds its :class:`~pipeline.scoring.ensemble.EnsembleConfig` with
:func:`pipeline.config.build`: defaults < ``--config`` < ``--set key=value`` < the options below;
the choices of ``--smooth``, ``--tune-on`` and ``--fill`` are the library's own Enums.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape
from rich.table import Table

from cli._common import console, fail, progress_bar
from pipeline.config import build
from pipeline.data.labels import CLASSES
from pipeline.data.manifest import SPLITS, load_clips
from pipeline.scoring.ensemble import EnsembleConfig, Fill, Protocol, Smoother
from pipeline.scoring.submission import check_submission
from pipeline.scoring.crossfit import gain_note, same_frames_note
from stages.ensemble import run_ensemble
from stages.ensemble_inputs import score_predictions


submission_app = typer.Typer(help="ABAW submission files.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add ``ensemble``, ``score`` and the ``submission`` group to the root app."""
    app.command("ensemble")(ensemble)
    app.command("score")(score)
    app.add_typer(submission_app, name="submission")


def ensemble(
    run_dirs: List[Path] = typer.Argument(..., help="Run directories written by `fuse`."),
    manifests: Path = typer.Option(..., "--manifests", help="Manifest directory (ground truth)."),
    out: Path = typer.Option(..., "--out", help="Where scores.json, report.html, PNGs and"
                             " submission.txt go."),
    config_file: Optional[Path] = typer.Option(None, "--config", help="EnsembleConfig TOML;"
                                               " the options below override it."),
    sets: List[str] = typer.Option([], "--set", help="Override, e.g. bias_step=0.05 (repeat)."),
    smooth: Optional[Smoother] = typer.Option(None, "--smooth", help="Temporal filter within clips"
                                            " (default: mean)."),
    tune_on: Optional[Protocol] = typer.Option(None, "--tune-on", help="Where choices are fitted:"
                                             " k-fold over val clips, the train split, or the"
                                             " scored frames themselves (default: val-crossfit)."),
    folds: Optional[int] = typer.Option(None, "--folds", min=2, help="k for val-crossfit"
                                        " (default: 5)."),
    fill: Optional[Fill] = typer.Option(None, "--fill", help="Frames with no face"
                                        " (default: nearest)."),
    bias: Optional[bool] = typer.Option(None, "--bias/--no-bias", help="Tune per-class biases"
                                        " (default: on)."),
    windows: Optional[str] = typer.Option(None, "--windows", help="Odd filter widths to try,"
                                          " e.g. 1,11,51,101."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to score (default: val)."),
    allow_manifest_mismatch: bool = typer.Option(
        False, "--allow-manifest-mismatch",
        help="Combine runs although they (or --manifests) have different manifest fingerprints."),
    bootstrap: Optional[int] = typer.Option(None, "--bootstrap", min=0, help="Resamples of the"
                                            " clip-level bootstrap intervals, 0 = none"
                                            " (default: 2000)."),
    nested: Optional[bool] = typer.Option(None, "--nested/--no-nested", help="Decide by inner"
                                          " folds whether fill, smoothing and biases are applied"
                                          " (default: on)."),
) -> None:
    """Combine the outputs of RUN_DIRs, score them on val, write the report and the submission."""
    if windows is not None:
        try:
            windows = [int(w) for w in windows.split(",")]
        except ValueError:
            raise fail(f"--windows {windows!r}: want comma-separated integers") from None
    options = {"smooth": smooth, "tune_on": tune_on, "fill": fill, "folds": folds, "bias": bias,
               "split": split, "windows": windows, "bootstrap": bootstrap, "nested": nested}
    config = build(EnsembleConfig, file=config_file, sets=sets, options=options)
    with progress_bar() as progress:
        result = run_ensemble(run_dirs, manifests, out, config, progress,
                              allow_manifest_mismatch=allow_manifest_mismatch)

    # the precision beside the table: fp32 and bf16 features can print other ensemble rows
    table = Table(title=f"{result.split} scores ({result.protocol}; features in"
                        f" {result.precision.split(' (')[0]})")
    level = next((r.interval.level for r in result.rows if r.interval), None)
    ci_column = f"{level:.0%} CI" if level is not None else None
    # ABAW-2021 is in scores.json and the report: the numbers keep their width in 80 columns.
    table.add_column("method", overflow="fold")
    table.add_column("fitted on", no_wrap=True)
    for column in ("macro-F1", ci_column, "accuracy"):
        if column:
            table.add_column(column, justify="right", no_wrap=True)
    # Every pairwise m,n ensemble is in scores.json and the report; the table keeps the best one.
    pairs = [r for r in result.rows if r.rule == "proportional"]
    best_pair = max(pairs, key=lambda r: r.scores.macro_f1, default=None)
    shown = [r for r in result.rows if r not in pairs or r is best_pair]
    for row in shown:
        final = row is result.final
        ci = [f"{row.interval.low:.3f}-{row.interval.high:.3f}" if row.interval else "-"]
        table.add_row(row.name, row.fitted_on, f"{row.scores.macro_f1:.4f}",
                      *(ci if ci_column else []), f"{row.scores.accuracy:.4f}",
                      style="bold" if final else None)
    console.print(table)
    if result.precision.startswith("unknown"):
        console.print(f"features' precision: {result.precision}", style="dim", soft_wrap=True,
                      markup=False, highlight=False)
    if len(pairs) > 1:
        console.print(f"({len(pairs) - 1} other m,n pairs of members: see scores.json and the report)",
                      style="dim")
    if result.gain is not None:
        console.print(gain_note(result))
    same = same_frames_note(result.rows)
    if same:
        console.print(same, style="dim")
    if result.tuned_on_scored_frames:
        console.print("[yellow]warning:[/] choices were tuned on the scored frames"
                      " (--tune-on same): these scores are optimistic")
    # soft_wrap: names and paths stay whole lines (copyable) whatever the terminal's width.
    console.print(f"[bold]{escape(result.final.name)}[/] macro-F1"
                  f" {result.final.scores.macro_f1:.4f}, ABAW-2021"
                  f" {result.final.scores.abaw2021_score:.4f} over"
                  f" {result.final.scores.n_frames} frames", soft_wrap=True)
    console.print(f"final on the ABAW 2021 track's 7 classes (no Other): ABAW-2021"
                  f" {result.final.scores.abaw2021_score_7class:.4f}", style="dim")
    if result.au is not None:
        _print_au(result)
    if result.va is not None:
        _print_va(result)
    for label, path in (("scores", result.scores_path), ("report", result.report_path)):
        console.print(f"{label}: {path}", soft_wrap=True, highlight=False, markup=False)
    console.print(f"submission: {result.submission_path or '-'} ({result.submission_note})",
                  soft_wrap=True, highlight=False, markup=False)


def _print_va(result) -> None:
    """The VA table of runs with VA outputs: CCC per dimension and mean, with CIs."""
    va = result.va
    table = Table(title=f"VA {va.split} scores (CCC)")
    for column in ("method", "fitted", "valence", "arousal", "mean", "mean CI"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in va.rows:
        ci = row.intervals["mean"] if row.intervals else None
        table.add_row(row.name, "yes" if row.tuned else "no", f"{row.scores.ccc_valence:.4f}",
                      f"{row.scores.ccc_arousal:.4f}", f"{row.scores.mean_ccc:.4f}",
                      f"[{ci.low:.3f}, {ci.high:.3f}]" if ci else "-",
                      style="bold" if row is va.final else None)
    console.print(table)
    console.print("VA smoothing windows (frames) for the test clips: valence "
                  f"{va.windows[0]}, arousal {va.windows[1]} (1 = none)", style="dim")
    for note in va.notes:
        console.print(note, style="dim")
    console.print(f"VA submission: {result.va_submission_path or '-'}", soft_wrap=True,
                  highlight=False, markup=False)


def _print_au(result) -> None:
    """The AU table of a run with AU outputs: scores at 0.5 and with fitted thresholds."""
    au = result.au
    table = Table(title=f"AU {au.split} scores ({result.protocol})")
    for column in ("method", "tuned", "mean F1", "accuracy", "ABAW-2021 AU"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in au.rows:
        table.add_row(row.name, "yes" if row.tuned else "no", f"{row.scores.mean_f1:.4f}",
                      f"{row.scores.accuracy:.4f}", f"{row.scores.abaw2021_score:.4f}",
                      style="bold" if row is au.final else None)
    console.print(table)
    for note in au.notes:
        console.print(note, style="dim")
    console.print(f"AU submission: {result.au_submission_path or '-'}"
                  f" ({result.au_submission_note})")


def score(
    predictions: Path = typer.Argument(..., help="A predictions .npz file or a run directory."),
    manifests: Path = typer.Option(..., "--manifests", help="Manifest directory (ground truth)."),
    split: Optional[str] = typer.Option(None, "--split", help="Split to score against (default:"
                                        " from the file's path, else val)."),
) -> None:
    """Score per-frame predictions as written (argmax, no post-processing) against a split."""
    if split is not None and split not in SPLITS:
        raise fail(f"--split {split!r}: not one of {', '.join(SPLITS)}")
    split, results = score_predictions(predictions, manifests, split)
    table = Table(title=f"{predictions} on {split} (argmax, as written)")
    table.add_column("metric")
    for name, _ in results:
        table.add_column(name, justify="right")
    table.add_row("frames", *(str(s.n_frames) for _, s in results))
    for label, key in (("macro-F1", "macro_f1"), ("accuracy", "accuracy"),
                       ("ABAW-2021", "abaw2021_score")):
        table.add_row(label, *(f"{getattr(s, key):.4f}" for _, s in results), style="bold")
    for c, name in enumerate(CLASSES):
        table.add_row(f"F1 {name}", *(f"{s.per_class_f1[c]:.4f}" for _, s in results))
    console.print(table)


@submission_app.command("check")
def check(
    file: Path = typer.Argument(..., help="A submission.txt."),
    manifests: Path = typer.Option(..., "--manifests", help="Manifest directory (its clips)."),
    split: str = typer.Option("test", "--split", help="Split the submission covers."),
) -> None:
    """Validate a submission file against the manifest's clips; print every problem."""
    clips = [c for c in load_clips(manifests, [split])]
    if not clips:
        raise fail(f"{manifests}: no {split} clips")
    problems = check_submission(file, clips)
    for problem in problems:
        console.print(problem, highlight=False, soft_wrap=True, markup=False)
    if problems:
        raise fail(f"{file}: {len(problems)} problem(s)")
    rows = sum(c.n_frames for c in clips)
    console.print(f"{file}: ok ({rows} rows for {len(clips)} {split} clips)")
