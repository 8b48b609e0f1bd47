"""The per-preset settings tables of docs/presets.md agree with the presets' resolved configs.

Each preset has a table under ``### `NAME` settings`` in docs/presets.md. A row names one or more
config keys in backticks (optionally followed by ``(method, ...)``: the row then applies to those
of the preset's methods only) and, in its second cell, one backticked value per key (TOML, a bare
word for a string). For every method the preset describes, every key of the config that
``fuse --method M --preset P`` resolves must have a row, with the value the config holds. Only
the run's plumbing (where it reads and runs, not what it learns) may be listed without values.
The tables are parsed here, so they cannot fall behind the code.
"""

import math
import re
import tomllib
from pathlib import Path

import pytest

from pipeline.config import to_dict
from pipeline.fusion.config import build_config
from pipeline.fusion.presets import PRESETS

TABLES = Path(__file__).resolve().parents[2] / "docs" / "presets.md"  # the tables' page
# Keys that say where a run reads and runs, not what it trains: listed without values.
PLUMBING = {"method", "seed", "store", "manifests", "train.buffer_mb", "train.cache_mb",
            "train.threads", "train.device", "bag.seed", "bag.member"}
_TICKED = re.compile(r"`([^`]*)`")


def _flat(data: dict, prefix: str = ""):
    for key, value in data.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _resolved(preset: str, method: str) -> dict:
    """Every key of the preset's config for ``method``; None values are listed too."""
    config = build_config(method, "/no/store.zarr", "", preset=preset)
    keys = dict(_flat(to_dict(config)))
    for section in ("head", "train", "sampling", "loss", "bag", "task"):  # to_dict drops None
        node = getattr(config, section, None)
        for name in getattr(node, "__dataclass_fields__", {}):
            value = getattr(node, name)
            if not hasattr(value, "__dataclass_fields__"):  # a nested table: flattened above
                keys.setdefault(f"{section}.{name}", value)
    return keys


def table(preset: str) -> list[tuple[list[str], list[str] | None, tuple[str, ...] | None]]:
    """(keys, values or None, methods or None) of each row of the preset's table in docs/presets.md."""
    lines = TABLES.read_text(encoding="utf-8").splitlines()
    heading = f"### `{preset}` settings"
    assert heading in lines, f"{TABLES.name} has no table {heading!r}"
    rows = []
    for line in lines[lines.index(heading) + 1:]:
        if not line.strip() and not rows:
            continue
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        keys = _TICKED.findall(cells[0])
        if not keys or set(cells[0]) <= set("-: "):
            continue  # the header and the separator
        methods = re.search(r"\(([^()`]*)\)\s*$", cells[0])
        values = _TICKED.findall(cells[1])
        rows.append((keys, values or None,
                     tuple(m.strip() for m in methods.group(1).split(",")) if methods else None))
    assert rows, f"{TABLES.name}: the table under {heading!r} is empty"
    return rows


def _parse(text: str):
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text  # a bare word: a string


def _same(stated, actual) -> bool:
    if isinstance(actual, (list, tuple)):
        return isinstance(stated, list) and len(stated) == len(actual) and all(
            _same(s, a) for s, a in zip(stated, actual))
    if isinstance(actual, bool) or actual is None or isinstance(actual, str):
        return stated == actual or (actual is None and stated == "none")
    return isinstance(stated, (int, float)) and not isinstance(stated, bool) and math.isclose(
        stated, actual, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_resolved_key_is_in_the_presets_table_with_its_value(preset):
    rows = table(preset)
    problems = []
    for method in PRESETS[preset].methods:
        for key, value in _resolved(preset, method).items():
            found = [(keys, values) for keys, values, methods in rows
                     if key in keys and (methods is None or method in methods)]
            if not found:
                problems.append(f"{method}: {key} (= {value!r}) is not in the table")
            for keys, values in found:
                if values is None:
                    if key not in PLUMBING:
                        problems.append(f"{method}: {key} is listed without its value")
                    continue
                if len(values) != len(keys):
                    problems.append(f"row {keys}: {len(keys)} keys but {len(values)} values")
                    continue
                stated = values[keys.index(key)]
                if not _same(_parse(stated), value):
                    problems.append(f"{method}: {key} is {value!r}, the table says {stated}")
    listed = {k for keys, _, _ in rows for k in keys}
    known = {k for m in PRESETS[preset].methods for k in _resolved(preset, m)}
    problems += [f"{k}: in the table but in no resolved config" for k in sorted(listed - known)]
    assert not problems, f"{TABLES.name}, preset {preset}:\n" + "\n".join(problems)


def test_the_table_check_fails_on_a_wrong_value(tmp_path):
    """The check above can fail: a table stating another gradient clipping is caught."""
    text = TABLES.read_text(encoding="utf-8")
    name = sorted(PRESETS)[0]
    start = text.index(f"### `{name}` settings")
    row = text.index("`train.grad_clip`", start)
    begin, end = text.rindex("\n", 0, row) + 1, text.index("\n", row)
    broken = text[:begin] + "| `train.grad_clip` | `7.5` | changed |" + text[end:]
    (tmp_path / "presets.md").write_text(broken, encoding="utf-8")
    globals()["TABLES"], saved = tmp_path / "presets.md", TABLES
    try:
        with pytest.raises(AssertionError, match="grad_clip is .*the table says 7.5"):
            test_every_resolved_key_is_in_the_presets_table_with_its_value(name)
    finally:
        globals()["TABLES"] = saved
