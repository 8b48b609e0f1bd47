"""The store's root ``zarr.json``: finding it damaged, and rebuilding it from what else survives.

What the root holds (the layout: :mod:`pipeline.features.store_format`) and where ``extract``
finds each piece again when the file is missing or unreadable:

==========================  ==========================================================================
``zarr_format``,            constants of the format
``node_type``,
``fer_pipeline_store``
``extractors``              each extractor's ``describe()``, merged run after run. Every ``extract``
                            run's report (``STORE.meta/reports/extract-*.json``) holds the descriptions
                            it recorded: merged in the reports' order (their names are the runs' end
                            times), then this run's, they are the record. **Lost** where no report
                            holds it: a ``store import`` (it writes none), a run killed before its
                            report, a deleted report. Found out through the arrays: every array's
                            marker must carry a cache key a description (or ``valid``'s, ``time``'s)
                            accounts for; otherwise nothing is rebuilt.
``feature_digests``         clip -> the digest of the manifest record it was extracted with. This run
                            records them for its clips anyway (from its manifests, after planning has
                            recomputed every clip whose length or fps changed). **Lost** for clips this
                            run does not extract (other splits, other manifests): a clip group keeps
                            its length and fps, not the media names the digest covers; a digest made
                            up for them would let ``fuse`` accept manifests it should refuse. Then
                            nothing is rebuilt, and the message names the splits to add.
``manifest_digests``        (stores from before feature digests) superseded by ``feature_digests``,
                            which the rebuild records for every clip
``consolidated_metadata``   rewritten when ``extract`` finishes (:mod:`pipeline.features.store_meta`)
==========================  ==========================================================================

So :func:`rebuild_root` writes the root only when every piece is found again, in one
``os.replace`` under the store's root lock, and otherwise raises one line saying what is lost and
what to run. Runs that overlapped with different descriptions under one name may come back in
the other order; which arrays are reused depends on their markers' cache keys, not on this record.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import zarr

from pipeline import io, locks
from pipeline.features.atomic import TMP_PREFIX
from pipeline.features.store_format import (FORMAT_VERSION, TIME_KEY, VALID_KEY, StoreError, meta_dir,
                                            one_line)

IMPORT_KEY_PREFIX = "hdf5-"  # the cache keys ``store import`` gives its arrays (pipeline.features.hdf5)


def root_damage(path: str | Path) -> str | None:
    """Why the root ``zarr.json`` of the store at ``path`` cannot be read (``"missing"``, ``"not
    JSON (...)"``, ...); None when it can, or when ``path`` is recognisably no store (no ``clips``
    group: :class:`~pipeline.features.store.FeatureStore` then says what it is)."""
    path = Path(path)
    if not (path / "clips" / "zarr.json").is_file():
        return None
    try:
        body = json.loads((path / "zarr.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return "missing"
    except OSError:
        return None  # unreadable for another reason (a folder, no permission): not damage
    except ValueError as e:
        return f"not JSON ({one_line(e)[:120]})"
    if not isinstance(body, dict) or body.get("zarr_format") != 3 or body.get("node_type") != "group":
        return "not the metadata of a Zarr v3 group"
    try:
        zarr.open_group(str(path), mode="r", use_consolidated=False)
    except (ValueError, TypeError, KeyError) as e:  # what zarr raises for malformed metadata
        return f"unreadable ({one_line(e)[:120]})"
    return None


def _nodes(folder: Path) -> list[str]:
    """Sub-folders with a ``zarr.json`` (not being built), without parsing it."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith(TMP_PREFIX)
                  and os.path.isfile(os.path.join(e.path, "zarr.json")))


def _attributes(node: Path) -> dict:
    """A node's attributes; {} when its ``zarr.json`` is damaged too (``extract`` recomputes it)."""
    try:
        attrs = json.loads((node / "zarr.json").read_text(encoding="utf-8")).get("attributes")
    except (OSError, ValueError, AttributeError):
        return {}
    return attrs if isinstance(attrs, dict) else {}


def reported_extractors(store: Path) -> dict[str, dict]:
    """The extractor descriptions the store's run reports hold, merged oldest first (a report
    that cannot be read is left out: the arrays' check then finds what it described missing)."""
    meta = meta_dir(store)
    # store/reports: where stores from before STORE.meta kept them.
    found = [*(meta / "reports").glob("extract-*.json"), *(store / "reports").glob("extract-*.json")]
    merged: dict[str, dict] = {}
    for report in sorted(found, key=lambda p: p.name):
        try:
            described = json.loads(report.read_text(encoding="utf-8")).get("extractors")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(described, dict):
            merged.update({k: v for k, v in described.items() if isinstance(v, dict)})
    return merged


def _described(key: str, extractors: dict[str, dict]) -> bool:
    """Whether an array's cache key comes from one of ``extractors`` (or is valid's or a time
    coordinate's): the key itself, or it followed by ``-stride{k}``/``-noaudio``/``-{rate}``."""
    known = {VALID_KEY, TIME_KEY}
    for description in extractors.values():
        known.add(str(description.get("cache_key")))
        known.update(str(k) for k in (description.get("array_keys") or {}).values())
    return any(key == k or key.startswith(f"{k}-") for k in known)


def rebuild_root(path: str | Path, damage: str, digests: dict[str, str],
                 descriptions: dict[str, dict]) -> None:
    """Write the root ``zarr.json`` again from the run reports, ``descriptions`` (this run's
    extractors) and ``digests`` (this run's clips' feature digests), or raise a
    :class:`StoreError` saying what cannot be found again (module docstring) and what to run.
    """
    path = Path(path)
    root_json = path / "zarr.json"
    clips = _nodes(path / "clips")
    lost = []
    others = [c for c in clips if c not in digests]
    if others:
        splits = sorted({str(s) for c in others if (s := _attributes(path / "clips" / c).get("split"))})
        hint = f" (split(s) {', '.join(splits)}: add them to --splits)" if splits else ""
        lost.append(f"the feature digests of {len(others)} clip(s) these manifests and splits do not "
                    f"extract, e.g. {others[0]!r}{hint}")
    extractors = reported_extractors(path)
    extractors.update(json.loads(json.dumps(descriptions, default=str)))  # as recorded in JSON
    undescribed = [(c, a, key) for c in clips if c not in others for a in _nodes(path / "clips" / c)
                   if isinstance(key := (_attributes(path / "clips" / c / a).get("complete") or {})
                                 .get("cache_key"), str) and not _described(key, extractors)]
    if undescribed:
        clip, array, key = undescribed[0]
        source = ("an import (`store import` writes no run report: rerun it into the new store)"
                  if key.startswith(IMPORT_KEY_PREFIX) else "an extraction whose run report is gone")
        lost.append(f"the record of what wrote {len(undescribed)} array(s), e.g. {clip}/{array} "
                    f"(cache key {key}: {source})")
    if lost:
        raise StoreError(f"{root_json}: {damage}, and `extract` cannot rebuild it: {'; '.join(lost)} "
                         "is lost; restore that file from a copy, or rerun `fer-pipeline extract` into "
                         "a new --store")
    body = {"attributes": {"fer_pipeline_store": FORMAT_VERSION, "extractors": extractors,
                           "feature_digests": dict(digests)},
            "zarr_format": 3, "node_type": "group"}  # the order zarr writes them in
    try:
        with locks.hold(meta_dir(path) / "locks", "root", True):
            if root_damage(path) is not None:  # another process may have rebuilt it meanwhile
                io.write_json(root_json, body, default=str, unique=True)
    except OSError as e:
        raise StoreError(f"{root_json}: {damage}; cannot write it again "
                         f"({e.strerror or one_line(e)})") from None
