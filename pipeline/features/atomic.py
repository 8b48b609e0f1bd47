"""Write aside, then move into place: the file operations that keep the feature store correct
without locks (see :mod:`pipeline.features.store`).

A directory (an array, a clip group, a new store) is built under a hidden temporary name in a
scratch folder on the same filesystem (the store's ``STORE.meta/tmp``, outside the Zarr
hierarchy, so that no reader ever lists a half-made node), complete, then renamed to its name: a
``rename`` within one filesystem is atomic on POSIX filesystems, NFS and Lustre included, so a
reader or a crash sees the old directory, no directory, or the new one, never half of one.
``rename`` cannot replace a non-empty directory, so an existing one is first renamed into the
scratch folder (readers then see none for that moment: the array counts as missing and is
recomputed or reported, never read half-made), then deleted.

A file (``zarr.json``) is replaced with :func:`pipeline.io.write_json` under a name of its
writer's own (``unique=True``): the one atomic-write toolkit, with its guards, umask and
full-disk message; this module holds what directories need beyond it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

from pipeline import io
from pipeline.io import TMP_PREFIX  # hidden names of what is being written (never listed as arrays)

STALE_SECONDS = 3600.0  # a temporary directory untouched this long was left by a dead writer


def aside_name(final: Path, scratch: Path | None = None) -> Path:
    """A unique hidden name to build ``final`` in, in ``scratch`` (default: beside ``final``);
    host and pid in the name say whose it is."""
    return (scratch or final.parent) / f"{TMP_PREFIX}{final.name}{io.writer_tag()}{uuid.uuid4().hex[:8]}"


def sweep(folder: Path) -> None:
    """Remove the temporary directories that killed writers left in ``folder``: those of a dead
    process on this host, and any untouched for :data:`STALE_SECONDS` (another host's)."""
    host = f"@{socket.gethostname()}@"
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]
    except OSError:
        return
    for path in entries:
        parts = path.name.split("@")
        dead = False
        if host in path.name and len(parts) >= 3 and parts[-2].isdigit():
            try:
                os.kill(int(parts[-2]), 0)
            except ProcessLookupError:
                dead = True
            except PermissionError:
                pass
        try:
            old = time.time() - path.stat().st_mtime > STALE_SECONDS
        except OSError:
            continue
        if dead or old:
            shutil.rmtree(path, ignore_errors=True)


def move_into_place(built: Path, final: Path) -> None:
    """Rename directory ``built`` to ``final``, replacing what is there (see the module doc); the
    replaced directory goes to ``built``'s folder before it is deleted."""
    replaced: list[Path] = []
    try:
        for _ in range(10):  # another writer may put its copy in place between our two renames
            try:
                os.rename(built, final)
                return
            except OSError as e:
                if e.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                    raise
            old = built.with_name(f"{TMP_PREFIX}old-{final.name}{io.writer_tag()}{uuid.uuid4().hex[:8]}")
            try:
                os.rename(final, old)
                replaced.append(old)
            except FileNotFoundError:
                continue
        raise OSError(errno.EBUSY, f"could not move {built.name} into place", str(final))
    finally:
        for old in replaced:
            shutil.rmtree(old, ignore_errors=True)


def update_attributes(node: Path, attrs: dict) -> None:
    """Merge ``attrs`` into a Zarr v3 node's attributes, replacing its ``zarr.json`` in one step."""
    meta_path = node / "zarr.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta.setdefault("attributes", {}).update(attrs)
    io.write_json(meta_path, meta, default=str, unique=True)


def chunk_sizes(array_dir: Path) -> dict[str, int]:
    """Every chunk file of an array (key relative to the array) and its size in bytes."""
    sizes = {}
    chunks = array_dir / "c"
    for folder, _, files in os.walk(chunks):
        for name in files:
            path = Path(folder, name)
            sizes[path.relative_to(array_dir).as_posix()] = path.stat().st_size
    return dict(sorted(sizes.items()))
