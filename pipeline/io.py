"""Atomic writes: every output file appears whole or not at all.

Each writer writes into ``<name>.tmp`` beside the target and renames it over the target with
:func:`os.replace` (atomic on POSIX within one file system), so a crash or an interruption never
leaves a half-written ``scores.json``, checkpoint or submission where a reader would take it for
a finished one; on an exception the temporary file is removed, and a full disk becomes one line
(:func:`no_space`). Whatever is at the temporary name is removed first, so a link planted there
is never written through. Files that must agree with each other (a score file and its report) are
written together with :func:`staged_files`.

A folder's owner may guard it (:func:`guard_writes`): every atomic write under it first runs the
guard's check, so that a run directory's owner that lost its lease stops before writing
(:mod:`pipeline.locks`). Staging folders carry their writer's host and pid, so that the next
:func:`staged_files` removes those of killed writers (:func:`remove_stale_staging`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pipeline.errors import PipelineError


def temporary_path(path: str | Path) -> Path:
    """The name a file is written under before it is renamed to ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


# Checks run before any write under a folder: folder -> check (raises to stop the write). The
# owner of a run directory in lease mode registers one (pipeline.locks.owner_lock): it renews
# its lease and stops when another process took the directory over.
_GUARDS: dict[Path, Callable[[], None]] = {}
_GUARDS_LOCK = threading.Lock()


@contextlib.contextmanager
def guard_writes(folder: str | Path, check: Callable[[], None]) -> Iterator[None]:
    """Run ``check`` before every write (and removal) under ``folder`` for the duration."""
    folder = Path(os.path.abspath(folder))
    with _GUARDS_LOCK:
        _GUARDS[folder] = check
    try:
        yield
    finally:
        with _GUARDS_LOCK:
            _GUARDS.pop(folder, None)


def check_write(path: str | Path) -> None:
    """Run the guards of the folders holding ``path`` (see :func:`guard_writes`)."""
    path = Path(os.path.abspath(path))
    with _GUARDS_LOCK:
        checks = [check for folder, check in _GUARDS.items() if folder in path.parents]
    for check in checks:
        check()


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path``, on error it is removed.

    The folder's guards (:func:`guard_writes`) run before writing and again just before the
    rename that publishes the file."""
    path = Path(path)
    check_write(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    # A file or link already at the temporary name (a killed writer's, or planted) is removed,
    # never written through: writers open the name with O_TRUNC, which follows a link.
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        yield tmp
        check_write(path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        full = no_space(path, e)
        if full is not None:
            raise full from None
        raise
    os.replace(tmp, path)


def no_space(path: str | Path, error: BaseException) -> PipelineError | None:
    """The one-line error for a disk (or quota) that is full while writing ``path``, else None."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        reason = "no space left" if error.errno == errno.ENOSPC else "disk quota exceeded"
        return PipelineError(f"{reason} on {Path(path).parent} (writing {Path(path).name});"
                             " free some space and rerun the same command to resume")
    return None


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any, indent: int = 2) -> Path:
    """``obj`` as indented JSON with a final newline."""
    return write_text(path, json.dumps(obj, indent=indent) + "\n")


def save_npz(path: str | Path, **arrays: Any) -> Path:
    """Uncompressed ``np.savez`` of ``arrays`` (written through an open file: numpy would
    otherwise append ``.npz`` to the temporary name)."""
    import numpy as np

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return Path(path)


def torch_save(path: str | Path, obj: Any) -> Path:
    """``torch.save(obj)`` (torch is imported only by the callers that save tensors).

    Serialised in memory first: torch's own file writer turns a full disk into "unexpected pos
    N vs M", a plain write gives ``ENOSPC`` (:func:`no_space`). Checkpoints of these heads are
    a few MB.
    """
    import io as _io

    import torch

    buffer = _io.BytesIO()
    torch.save(obj, buffer)
    return write_bytes(path, buffer.getbuffer())


def save_figure(path: str | Path, figure: Any, **options: Any) -> Path:
    """Save a matplotlib figure; the format comes from ``path``'s suffix (not the temporary one)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format=path.suffix.lstrip(".") or "png", **options)
    return path


@contextlib.contextmanager
def staged_files(out: str | Path, last: str, optional: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a staging folder inside ``out`` to write a set of files into; then move them into
    ``out`` with ``last`` moved last (and its old version removed first), so ``out`` never holds
    a ``last`` that disagrees with the files beside it. ``optional``: names the set may lack; an
    old one in ``out`` is removed when the new set has none (it would not match).

    An exception while writing (Ctrl-C included) removes the staging folder and leaves ``out``
    as it was. Once moving has begun, an interruption is held back until every file is moved
    (renames take microseconds), then raised.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(out)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{socket.gethostname()}-{os.getpid()}-",
                                    dir=out))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    names = sorted(p.name for p in staging.iterdir() if p.name != last)
    steps = [lambda: (out / last).unlink(missing_ok=True)]
    steps += [lambda name=name: (out / name).unlink(missing_ok=True)
              for name in optional if not (staging / name).exists()]
    steps += [lambda name=name: _move(staging / name, out / name) for name in names]
    if (staging / last).exists():
        steps.append(lambda: _move(staging / last, out / last))
    interrupted: BaseException | None = None
    while steps:
        try:
            while steps:
                steps[0]()
                steps.pop(0)
        except KeyboardInterrupt as e:  # finish the moves first
            interrupted = e
    shutil.rmtree(staging, ignore_errors=True)
    if interrupted is not None:
        raise interrupted


STALE_STAGING_SECONDS = 24 * 3600.0  # a staging folder of another host is stale after this


def _staging_is_stale(folder: Path) -> bool:
    """A staging folder left by a killed writer: ``.staging-HOST-PID-XXXX`` of a dead process on
    this host; one of another host (whose processes cannot be asked) or of an older version
    (``.staging-XXXX``) once untouched for :data:`STALE_STAGING_SECONDS`."""
    host, _, rest = folder.name[len(".staging-"):].rpartition("-")
    host, _, pid = host.rpartition("-")
    if host == socket.gethostname() and pid.isdigit():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's
        return False  # alive: a live run's (a reused pid only delays the cleaning)
    try:
        return time.time() - folder.stat().st_mtime > STALE_STAGING_SECONDS
    except FileNotFoundError:
        return False


def remove_stale_staging(out: Path) -> list[Path]:
    """Remove the staging folders killed writers left in ``out`` (never a live one's)."""
    removed = []
    for folder in out.glob(".staging-*"):
        if folder.is_dir() and _staging_is_stale(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _move(source: Path, target: Path) -> None:
    """``os.replace`` that may be repeated (an interruption may come right after it)."""
    if source.exists():
        os.replace(source, target)
