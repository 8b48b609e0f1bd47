"""Which precision the features behind stage three's members were extracted in (issue 25).

Results can differ between fp32 and bf16 features (docs/stability.md), so stage three
prints and records the precision next to its table. Nothing new is written for it: each run's
``config.toml`` names its store, its record's ``features`` holds the cache key of every array the
run read, and the store's root attributes describe every extractor that wrote there (its cache key
and its resolved ``precision``, :meth:`pipeline.features.extractors.base.Extractor.describe`).
An array's key is its extractor's key, or that key and a suffix (``-stride1``). Stage three needs
only the run directories, so a store that cannot be read makes the precision "unknown" with the
reason, never an error.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Sequence

from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.runs.layout import RunPaths
from pipeline.runs.record import RunRecord

VALID_ARRAY = "valid"  # the face mask array: no extractor wrote it


def run_precisions(run_dir: Path, features: dict) -> set[str]:
    """The precisions of the extractors whose arrays the run read (raises PipelineError, OSError,
    TOMLDecodeError when its store cannot be read)."""
    config = tomllib.loads(RunPaths(run_dir).config.read_text(encoding="utf-8"))
    extractors = FeatureStore(config["store"], "r").extractors()
    found = set()
    for name, key in features.items():
        if name == VALID_ARRAY:
            continue
        match = [e.get("precision") for e in extractors.values()
                 if key == e.get("cache_key") or str(key).startswith(f"{e.get('cache_key')}-")]
        if not match:
            raise PipelineError(f"no extractor of the store wrote array {name} (key {key})")
        found.update(str(p) for p in match)
    return found


def feature_precision(run_dirs: Sequence[Path], records: Sequence[RunRecord]) -> str:
    """"bf16", "fp32", "bf16 + fp32" (runs on stores of different precisions), or
    "unknown (<run>: <why>)"."""
    found: set[str] = set()
    for run_dir, record in zip(map(Path, run_dirs), records):
        features = record.features
        if not features:
            return f"unknown ({run_dir.name}: its metrics.json lists no features)"
        try:
            found |= run_precisions(run_dir, features)
        except (PipelineError, OSError, KeyError, tomllib.TOMLDecodeError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            return f"unknown ({run_dir.name}: {reason})"
    return " + ".join(sorted(found)) if found else "unknown (no run)"
