"""The before/after table of ``make finetune-demo``: heads on random frozen vs fine-tuned backbones.

Usage: ``python tests/bench/finetune_compare.py FT_WORK`` where FT_WORK holds ``scores-frozen/``
and ``scores-tuned/`` (``fer-pipeline ensemble`` outputs over the image, audio and mfm runs of
each store) and ``weights/{timm,tdnn}`` (the fine-tunes). Prints a markdown table of each head's
validation macro-F1 with its bootstrap interval and what it was fitted on (the heads select on
the train-dev slice), then each fine-tune's selection, epochs and time; writes the same to
``FT_WORK/comparison.md``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROWS = (("image/main", "image head"), ("audio/main", "audio head"), ("mfm/fusion", "mfm (fusion)"),
        ("mfm/image", "mfm (image output)"), ("mfm/audio", "mfm (audio output)"))


def _rows(scores: Path) -> dict[str, dict]:
    data = json.loads((scores / "scores.json").read_text(encoding="utf-8"))
    return {row["name"]: row for row in data["rows"] if row["kind"] == "member"}


def _cell(row: dict | None) -> str:
    if row is None:
        return "-"
    ci = row.get("macro_f1_ci") or {}
    interval = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else ""
    return f"{row['macro_f1']:.3f}{interval}"


def table(work: Path) -> str:
    frozen, tuned = _rows(work / "scores-frozen"), _rows(work / "scores-tuned")
    lines = ["| head (val macro-F1, 95% bootstrap interval) | random frozen backbones | "
             "fine-tuned backbones | fitted on |", "| --- | --- | --- | --- |"]
    for name, label in ROWS:
        fitted = (tuned.get(name) or frozen.get(name) or {}).get("fitted_on", "-")
        lines.append(f"| {label} | {_cell(frozen.get(name))} | {_cell(tuned.get(name))} | {fitted} |")
    lines += ["", "| fine-tune | model | epoch chosen / run | train-dev macro-F1 | time |",
              "| --- | --- | --- | --- | --- |"]
    for which in ("timm", "tdnn"):
        folder = work / "weights" / which
        record = json.loads((folder / "finetune.json").read_text(encoding="utf-8"))
        history = json.loads((folder.with_name(which + ".train") / "history.json").read_text())
        lines.append(f"| {which} | {record['model']} | {record['epoch']} / {record['epochs_run']} | "
                     f"{record['selection_score']:.3f} | {history['seconds']:.0f} s |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    work = Path(sys.argv[1])
    text = table(work)
    (work / "comparison.md").write_text(text, encoding="utf-8")
    print(text, end="")
