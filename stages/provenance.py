"""Where stage three's members came from, for the report's provenance and its warnings (issue 35).

Nothing new is recorded for it: each run's ``config.toml`` holds every setting of the ``fuse``
that made it (method, store, manifests), its record's ``features`` the cache key of every array
it read, and the store's root attributes each extractor's description (weights file and sha256,
``random_weights``, resolved precision). Runs record no command line, so the command shown for a
member is one that remakes it from its own ``config.toml``. A store that cannot be read leaves a
member's extractors unknown, with the reason, never an error. The package version and the git
commit (when the package is a git checkout) say which code made the report.
"""

from __future__ import annotations

import os
import platform
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from pipeline import __version__
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.runs.layout import RunPaths
from pipeline.runs.record import RunRecord
from stages.precision import VALID_ARRAY


@dataclass
class MemberSource:
    """One run directory: the command that remakes it and the extractors behind what it read."""

    run: str  # the run directory's name
    method: str
    command: str  # a `fer-pipeline fuse` command that remakes the run from its config.toml
    extractors: list[dict] = field(default_factory=list)  # name, precision, weights, random
    problem: str | None = None  # why the extractors are unknown
    store: str | None = None  # the store it read
    extract_reports: list[str] = field(default_factory=list)  # its extraction runs' records


@dataclass
class Provenance:
    """What made the report: code, machine, date, and each member's source."""

    version: str
    commit: str | None  # None: not a git checkout (an installed package)
    date: str  # UTC, when the report was written
    machine: str
    precision: str  # the members' feature precision (stages.precision)
    members: list[MemberSource]


def git_commit(where: Path | None = None) -> str | None:
    """The commit of the checkout the package runs from (``+ changes`` when its tracked files
    differ), or None when it is no git checkout or git is missing."""
    where = where or Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short=12", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def machine() -> str:
    """Host, platform and CPU count of the machine writing the report."""
    return (f"{platform.node() or 'unknown host'} ({platform.system()} {platform.machine()},"
            f" {os.cpu_count() or '?'} CPUs, Python {platform.python_version()})")


def member_source(run_dir: Path, record: RunRecord) -> MemberSource:
    """The run's remaking command and the extractors whose arrays it read."""
    run_dir = Path(run_dir)
    try:
        config = tomllib.loads(RunPaths(run_dir).config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return MemberSource(run_dir.name, record.method or "?", "-", [],
                            f"no readable config.toml ({reason})")
    method = str(config.get("method") or record.method or "?")
    words = ["fer-pipeline", "fuse", "--method", method]
    for key in ("store", "manifests"):
        if config.get(key):
            words += [f"--{key}", str(config[key])]
    words += ["--out", str(run_dir.parent), "--name", run_dir.name,
              "--config", str(RunPaths(run_dir).config)]
    source = MemberSource(run_dir.name, method, shlex.join(words))
    try:
        store = FeatureStore(config["store"], "r")
        described = store.extractors()
        source.store = str(config["store"])
        # each `extract` run's record (its ExtractConfig and what it did), oldest first
        records = (store.meta / "reports").glob("extract-*.json")
        source.extract_reports = sorted(str(p) for p in records)
    except (PipelineError, OSError, KeyError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        source.problem = f"its store cannot be read ({reason})"
        return source
    seen = set()
    for name, key in record.features.items():
        if name == VALID_ARRAY:
            continue
        for extractor in described.values():
            own = extractor.get("cache_key")
            if own and (key == own or str(key).startswith(f"{own}-")) and own not in seen:
                seen.add(own)
                source.extractors.append({
                    "name": extractor.get("name", "?"),
                    "precision": extractor.get("precision", "?"),
                    "random_weights": bool(extractor.get("random_weights")),
                    "weights": extractor.get("weights"),
                    "sha256": (extractor.get("weights_sha256") or "")[:12] or None,
                })
    if not source.extractors and record.features:
        source.problem = "no extractor of its store wrote the arrays it read"
    return source


def member_sources(run_dirs: Sequence[Path], records: Sequence[RunRecord]) -> list[MemberSource]:
    return [member_source(Path(d), r) for d, r in zip(run_dirs, records)]


def random_weight_extractors(sources: Sequence[MemberSource]) -> list[str]:
    """The extractors, by name, whose random weights made features some member read."""
    return sorted({e["name"] for s in sources for e in s.extractors if e["random_weights"]})


def report_date() -> str:
    """Now in UTC, or ``$SOURCE_DATE_EPOCH`` (the reproducible-builds convention) when it is set:
    the one thing besides the machine and commit that makes two reports of the same runs differ."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    when = (datetime.fromtimestamp(int(epoch), timezone.utc) if epoch.isdigit()
            else datetime.now(timezone.utc))
    return when.strftime("%Y-%m-%d %H:%M UTC")


def provenance(run_dirs: Sequence[Path], records: Sequence[RunRecord],
               precision: str) -> Provenance:
    return Provenance(__version__, git_commit(), report_date(), machine(), precision,
                      member_sources(run_dirs, records))


def warnings(sources: Sequence[MemberSource], precision: str) -> list[str]:
    """The report banner's lines about the features: random weights and precision."""
    lines = []
    random = random_weight_extractors(sources)
    if random:
        lines.append(f"RANDOM WEIGHTS: the features of {', '.join(random)} come from untrained"
                     " (seeded random) backbones, no weights file was loaded: these scores measure"
                     " the pipeline, not a trained model (extract with --weights NAME=PATH)")
    if precision.startswith("unknown"):
        lines.append(f"precision: the members' feature precision is {precision}")
    elif "+" in precision:
        lines.append(f"precision: members read features of different precisions ({precision});"
                     " bf16 and fp32 features can move rows (docs/stability.md)")
    elif precision == "bf16":
        lines.append("precision: features extracted in bf16; fp32 features can move the tuned"
                     " rows, rarely the final one (docs/stability.md)")
    return lines
