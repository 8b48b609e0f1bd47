"""``fer-pipeline manifest ROOT --out DIR``: read an Aff-Wild2-style dataset into clip manifests.

Prints the clips, frames, faces and labelled frames per class of each split (and, when the dataset
has AU annotations, the AU clips, labelled frames and active frames per AU of each AU split), the
leakage guard's findings, then every repair and rejection with its reason (``DIR/report.json``
holds the same). Exits 1 when a clip was rejected, unless ``--allow-skips`` accepts manifests
without it: the exit code says whether manifests were written (on exit 1 only ``report.json``
is, and manifests already in DIR are left as they were).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from cli._common import console, fail, progress_bar
from pipeline.data.dataset import read_dataset
from pipeline.data.labels import AU_NAMES, CLASSES
from pipeline.data.leakage import DEFAULT_GUARD, GUARDS
from pipeline.data.manifest import AU_SPLITS, SPLITS, DatasetReading, Issue, write_manifests

LeakageGuard = Enum("LeakageGuard", {mode: mode for mode in GUARDS}, type=str)


def _summary(reading: DatasetReading) -> Table:
    """Splits as columns and figures as rows, so that eight classes fit an 80-column terminal."""
    counts = reading.counts()
    table = Table(title=f"Dataset {reading.root}", title_justify="left")
    table.add_column("")
    for split in SPLITS:
        table.add_column(split, justify="right")
    for key in ("clips", "frames", "faces"):
        table.add_row(key, *(f"{counts[s][key]:,}" for s in SPLITS))
    table.add_section()
    for name in CLASSES:
        table.add_row(name, *(f"{counts[s]['labelled'][name]:,}" for s in SPLITS))
    table.add_row("unlabelled", *(f"{counts[s]['unlabelled']:,}" for s in SPLITS))
    if any(counts[s]["au"]["clips"] for s in SPLITS):
        au = {s: counts[s]["au"] for s in SPLITS}
        table.add_section()

        def row(name: str, value) -> None:  # no AU test split: its column stays empty
            table.add_row(name, *(f"{value(au[s]):,}" if s in AU_SPLITS else "" for s in SPLITS))

        row("AU clips", lambda c: c["clips"])
        row("AU labelled", lambda c: c["labelled"])
        for name in AU_NAMES:
            row(name, lambda c, name=name: c["active"][name])
        row("AU unlabelled", lambda c: c["unlabelled"])
    if any(counts[s].get("va", {}).get("clips") for s in SPLITS):
        table.add_section()
        for key in ("clips", "valid", "invalid"):
            table.add_row(f"VA {key}", *(f"{counts[s]['va'][key]:,}" for s in SPLITS))
    return table


def _print_leakage(reading: DatasetReading) -> None:
    """The leakage guard's findings, one line per direction that found clips."""
    leakage = reading.leakage
    if reading.au_only:
        console.print(f"{len(reading.au_only)} clip(s) with AU labels only (au_only.jsonl)",
                      highlight=False)
    for found, score, task, other in (("au_val_in_expr_train", "au_val", "AU", "expression"),
                                      ("expr_val_in_au_train", "expr_val", "expression", "AU"),
                                      ("va_val_in_expr_train", "va_val", "VA", "expression"),
                                      ("va_val_in_au_train", "va_val", "VA", "AU"),
                                      ("expr_val_in_va_train", "expr_val", "expression", "VA"),
                                      ("au_val_in_va_train", "au_val", "AU", "VA")):
        clips = leakage.get(found, [])
        if not clips:
            continue
        if leakage["guard"] == "off":
            action = "kept in its scores (--leakage-guard off)"
        else:
            action = (f"left out of the {task} validation scores "
                      f"({leakage['excluded_frames'][score]:,} labelled frames)")
        console.print(f"leakage guard: {len(clips)} {task} validation clip(s) in the {other} "
                      f"training split, {action}: {', '.join(clips)}", markup=False,
                      highlight=False, soft_wrap=True)


def _print_issues(title: str, issues: list[Issue]) -> None:
    if not issues:
        return
    console.print(f"[bold]{title} ({len(issues)}):[/]")
    for issue in issues:
        # markup off: clip ids and paths may hold "[...]", which rich would read as style tags.
        console.print(f"  {issue.clip}: {issue.file}: {issue.reason} [{issue.kind}]",
                      markup=False, highlight=False, soft_wrap=True)


def manifest(
    root: Path = typer.Argument(..., help="Dataset folder in the Aff-Wild2 layout, or the --out "
                                "folder of `faces` (raw videos: unlabelled test clips)."),
    out: Path = typer.Option(..., "--out", help="Folder for <split>.jsonl and report.json."),
    test_list: Optional[Path] = typer.Option(
        None, "--test-list",
        help="Text file of test clip names, one per line (default: the *test*.txt under ROOT).",
    ),
    allow_skips: bool = typer.Option(
        False, "--allow-skips", help="Exit 0 even when clips were rejected."
    ),
    leakage_guard: LeakageGuard = typer.Option(
        DEFAULT_GUARD, "--leakage-guard",
        help="Leave validation clips of one task that are in the other task's training split out "
             "of that validation score: the same clip (paper 003), the same video, or off.",
    ),
) -> None:
    """Read an Aff-Wild2-style dataset into clip manifests, repairing or rejecting bad clips."""
    with progress_bar() as progress:
        reading = read_dataset(root, test_list=test_list, progress=progress,
                               leakage_guard=leakage_guard.value)
    refused = bool(reading.rejections) and not allow_skips
    report = write_manifests(reading, out, manifests=not refused)
    console.print(_summary(reading))
    if reading.test_list is None and not reading.clips["test"]:
        console.print("no test list found: the test split is empty", highlight=False)
    _print_leakage(reading)
    _print_issues("Repaired", reading.repairs)
    _print_issues("Rejected", reading.rejections)
    if refused:
        raise fail(f"{len(reading.rejections)} clip(s) rejected (listed above and in {report}); "
                   "no manifests written: pass --allow-skips to write them without those clips")
    console.print(f"manifests and report written to {out}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("manifest")(manifest)
