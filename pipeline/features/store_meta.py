"""Metadata of the feature store for other readers: consolidated metadata, clip group attributes.

**Consolidated metadata.** xarray (and zarr) open a store faster, and without a warning, when its
root ``zarr.json`` holds every node's metadata (``consolidated_metadata``, the layout
``zarr.consolidate_metadata`` writes). It describes the store at one moment, so it is written
when a writer finishes (the end of ``extract``, of ``store import``) and removed when a writer
starts (:func:`unconsolidate`, before its first write): a reader that uses it sees either a
finished store or none and falls back to listing the folders. :class:`FeatureStore` never uses it
(``use_consolidated=False``): it lists the folders, so it is correct whatever the root says.
Two writers at once: the first to finish consolidates while the other still writes; the other's
arrays appear when it finishes (and a reader without consolidated metadata sees them at once).

This module writes the root ``zarr.json`` itself, in one ``os.replace`` under the store's root
lock (``zarr.consolidate_metadata`` rewrites it in place, where a crash would leave half of it),
and reads each node's ``zarr.json`` from disk, skipping nodes being built (``.tmp-*``).

**Clip attributes.** :func:`clip_attributes` are what a clip group records about its clip
besides its length and fps: ``has_audio``, ``split``, ``video_id`` (and ``au_split`` for clips
with AU labels), so that a reader of the store alone can group clips by split and video.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Iterator

from pipeline import io, locks
from pipeline.data.manifest import Clip
from pipeline.features.atomic import TMP_PREFIX
from pipeline.features.store_format import StoreError, meta_dir

KEY = "consolidated_metadata"

__all__ = ["KEY", "clip_attributes", "consolidate", "is_consolidated", "unconsolidate"]


def clip_attributes(clip: Clip) -> dict:
    """The attributes a clip group carries besides ``n_frames`` and ``fps``."""
    attrs = {"has_audio": clip.audio_path is not None, "split": clip.split,
             "video_id": clip.video_id}
    if clip.au_split is not None:
        attrs["au_split"] = clip.au_split
    return attrs


def _inline(metadata: dict) -> dict:
    return {"kind": "inline", "must_understand": False, "metadata": metadata}


def _nodes(root: Path) -> dict[str, dict]:
    """Every node below ``root`` (relative path -> its zarr.json), not descending into arrays."""
    nodes: dict[str, dict] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(TMP_PREFIX))
        here = Path(folder)
        if here == root:
            continue
        if "zarr.json" not in files:
            dirs[:] = []  # not a node (a chunk folder): nothing below is one either
            continue
        meta = json.loads((here / "zarr.json").read_text(encoding="utf-8"))
        if meta.get("node_type") == "array":
            dirs[:] = []  # chunks below
        else:
            meta = {**meta, KEY: _inline({})}  # as zarr writes a nested group's entry
        nodes[here.relative_to(root).as_posix()] = meta
    return nodes


@contextlib.contextmanager
def _root_json(root: Path) -> Iterator[None]:
    """The root lock held; a filesystem error as one line naming the store."""
    try:
        with locks.hold(meta_dir(root) / "locks", "root", True):
            yield
    except OSError as e:
        raise StoreError(f"{root}: cannot write the consolidated metadata "
                         f"({e.strerror or ' '.join(str(e).split())})") from None


def consolidate(store: str | Path) -> int:
    """Write the store's consolidated metadata; returns the number of nodes it lists."""
    root = Path(store)
    with _root_json(root):
        nodes = _nodes(root)
        meta = json.loads((root / "zarr.json").read_text(encoding="utf-8"))
        meta[KEY] = _inline(nodes)
        io.write_json(root / "zarr.json", meta, default=str, unique=True)
    return len(nodes)


def is_consolidated(store: str | Path) -> bool:
    meta = json.loads((Path(store) / "zarr.json").read_text(encoding="utf-8"))
    return meta.get(KEY) is not None


def unconsolidate(store: str | Path) -> None:
    """Remove the consolidated metadata (a writer is about to change the store)."""
    root = Path(store)
    if not is_consolidated(root):
        return
    with _root_json(root):
        meta = json.loads((root / "zarr.json").read_text(encoding="utf-8"))
        if meta.pop(KEY, None) is not None:
            io.write_json(root / "zarr.json", meta, default=str, unique=True)
