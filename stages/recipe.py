"""``fer-pipeline recipe NAME``: run a paper's chain of stage commands (:mod:`pipeline.recipes`).

Each step runs as its own ``fer-pipeline`` process (``python -m cli.main``: the command printed is
the command run). A step is skipped when its output exists and ``WORK/recipe/<step>.json``, written
after it succeeded, records the same command; otherwise it runs (each stage resumes on its own).
The runner adds nothing of its own to the chain: no option of any stage is decided here.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pipeline.errors import PipelineError
from pipeline.io import write_text
from pipeline.recipes import missing_weights, recipe, render, substitutions


@dataclass
class StepResult:
    id: str
    command: str
    status: str  # "ran", "skipped" (done before), "planned" (dry run)
    seconds: float = 0.0


@dataclass
class RecipeResult:
    name: str
    steps: list[StepResult] = field(default_factory=list)
    missing: tuple[str, ...] = ()


def command_line(args: list[str]) -> str:
    """The step as a shell line a user can paste."""
    return "fer-pipeline " + shlex.join(args)


def _marker(work: Path, step_id: str) -> Path:
    return work / "recipe" / f"{step_id}.json"


def is_done(work: Path, step_id: str, args: list[str], output: str) -> bool:
    """Whether the step finished before with the same command (its marker) and its output exists."""
    marker = _marker(work, step_id)
    if not marker.is_file() or not Path(output).exists():
        return False
    try:
        return json.loads(marker.read_text(encoding="utf-8")).get("args") == args
    except (OSError, ValueError, AttributeError):
        return False  # an unreadable marker: the step runs again (it resumes)


def run_recipe(name: str, data: str | Path, work: str | Path, scale: str = "demo",
               weights: dict[str, str] | None = None, allow_random_weights: bool = False,
               dry_run: bool = False, echo: Callable[[str], None] = print) -> RecipeResult:
    """Run (or with ``dry_run`` print) recipe ``name``'s steps on ``data`` into ``work``."""
    r = recipe(name)
    weights = dict(weights or {})
    missing = missing_weights(r, weights)
    if missing and not allow_random_weights and not dry_run:
        raise PipelineError(
            f"recipe {name}: the paper starts {', '.join(missing)} from pretrained weights "
            f"({', '.join(r.pretrained[k] for k in missing)}): give "
            f"{' '.join(f'--weights {k}=PATH' for k in missing)}, or pass --allow-random-weights")
    work = Path(work)
    steps = render(r, str(data), str(work), scale, weights, allow_random_weights)
    result = RecipeResult(name, missing=r.missing)
    echo(f"recipe {name}: {r.paper}, scale {scale}")
    for line in substitutions(r, scale, weights):
        echo(f"  {scale} scale: {line}")
    for line in r.missing:
        echo(f"  not built yet: {line}")
    if missing:
        echo(f"  RANDOM weights (--allow-random-weights): {', '.join(missing)}" if
             allow_random_weights else f"  to run: --weights KEY=PATH for {', '.join(missing)} "
             f"(or --allow-random-weights)")
    for step, args, output in steps:
        line = command_line(args)
        if is_done(work, step.id, args, output):
            echo(f"[done] {step.id}: {line}")
            result.steps.append(StepResult(step.id, line, "skipped"))
            continue
        if dry_run:
            echo(f"[plan] {step.id}: {line}")
            result.steps.append(StepResult(step.id, line, "planned"))
            continue
        echo(f"[run ] {step.id}: {line}")
        start = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", "cli.main", *args])
        seconds = time.perf_counter() - start
        if code != 0:
            raise PipelineError(f"recipe {name}: step {step.id} failed (exit {code}): {line}")
        write_text(_marker(work, step.id), json.dumps({"args": args, "seconds": seconds}) + "\n")
        echo(f"       {step.id}: {seconds:.1f} s")
        result.steps.append(StepResult(step.id, line, "ran", seconds))
    return result
