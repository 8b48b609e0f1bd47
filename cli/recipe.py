"""``fer-pipeline recipe NAME --data ROOT --work DIR``: a paper's whole chain of stage commands.

The chains are data (:mod:`pipeline.recipes`); the runner is :mod:`stages.recipe`. docs/recipes.md
lists each recipe's commands and what is ours where the paper is silent. ``fer-pipeline stand-in
NAME --out DIR`` writes the audio stand-in folder a demo-scale recipe extracts with.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from cli._common import console
from cli.extract import parse_weights


def recipe(
    name: str = typer.Argument(..., help="kim2023, jeong2022, jin2021, yu2025, sun2026 or yu2026."),
    data: Path = typer.Option(..., "--data", help="Dataset root in the Aff-Wild2 layout."),
    work: Path = typer.Option(..., "--work", help="Folder for every step's output."),
    scale: str = typer.Option("demo", "--scale", help="demo (few epochs, small widths: a CPU and "
                              "the demo data) or full (the paper's settings)."),
    weights: List[str] = typer.Option([], "--weights", help="KEY=PATH: the pretrained weights a "
                                      "backbone starts from (repeat; the plan names the keys)."),
    allow_random_weights: bool = typer.Option(
        False, "--allow-random-weights",
        help="Start backbones the paper starts pretrained from seeded random weights instead."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the commands; run nothing."),
) -> None:
    """Run a paper's chain: manifest, fine-tune, extract, fuse, ensemble (skips finished steps)."""
    from stages.recipe import run_recipe

    def echo(line: str) -> None:
        console.print(line, highlight=False, soft_wrap=True, markup=False)

    result = run_recipe(name, data, work, scale=scale, weights=parse_weights(weights),
                        allow_random_weights=allow_random_weights, dry_run=dry_run, echo=echo)
    ran = [s for s in result.steps if s.status == "ran"]
    if ran:
        echo("wall time per step: " + ", ".join(f"{s.id} {s.seconds:.1f} s" for s in ran))


def stand_in(
    name: str = typer.Argument(..., help="fer_demo_wav2vec2 or fer_demo_wavlm."),
    out: Path = typer.Option(..., "--out", help="The weights folder to write (replaced whole)."),
    seed: int = typer.Option(0, "--seed", help="Seed the random weights are drawn from."),
) -> None:
    """Write a small audio encoder of random weights for demo runs (extract -e hf_audio --weights
    hf_audio=OUT): the stand-in a recipe's demo scale puts in place of wav2vec2 or WavLM."""
    from pipeline.features.extractors.demo_audio_models import write_stand_in

    write_stand_in(name, out, seed=seed)
    console.print(f"{name} (seeded random weights, seed {seed}) written to {out}", highlight=False,
                  soft_wrap=True, markup=False)


def register(app: typer.Typer) -> None:
    """Add this group's commands to the root app."""
    app.command("recipe")(recipe)
    app.command("stand-in")(stand_in)
