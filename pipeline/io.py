"""Atomic writes: every output file appears whole or not at all.

Each writer writes into ``<name>.tmp`` beside the target and renames it over the target with
:func:`os.replace` (atomic on POSIX within one file system); where several processes may write
the same file at once without a lock (the feature store's ``zarr.json``), each writes under a
name of its own instead (``unique=True``: hidden, with its host and pid, see
:func:`unique_temporary_path`), so a crash or an interruption never
leaves a half-written ``scores.json``, checkpoint or submission where a reader would take it for
a finished one; on an exception the temporary file is removed, and a full disk becomes one line
(:func:`no_space`). Whatever is at the temporary name is removed first, so a link planted there
is never written through. Files that must agree with each other (a score file and its report) are
written together with :func:`staged_files`.

Every file (and folder) written here follows the user's umask, like a plain ``open``: writers
that create their files private (safetensors' ``save_file``, :func:`tempfile.mkdtemp`) are
brought back to ``0o666``/``0o777`` minus the umask before the rename (:func:`follow_umask`), so
that a teammate on shared storage can read what the umask lets them. A whole folder appears whole
or not at all with :func:`staged_folder` (a sibling staging folder renamed into place). Zip
members written by name (``writestr``, the streamed prediction files) carry a fixed time
(:func:`zip_member`) instead of now, so that the same arrays give the same bytes on every run.

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
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from pipeline.errors import PipelineError


# The time of every zip member this project writes (.npz): the earliest a zip can hold, so that an
# archive's bytes depend on its contents alone (a resumed run writes the bytes of an uninterrupted one).
ZIP_TIME = (1980, 1, 1, 0, 0, 0)

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask: from ``/proc/self/status`` (Linux), else by setting it and setting it
    back under a lock (a file another thread creates in that instant would get 022)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def follow_umask(path: str | Path) -> None:
    """Give ``path`` (and, for a folder, everything in it) the permissions a plain ``open`` or
    ``mkdir`` would under the current umask: ``0o666`` / ``0o777`` minus the umask."""
    mask = current_umask()
    path = Path(path)
    paths = [path, *path.rglob("*")] if path.is_dir() and not path.is_symlink() else [path]
    for p in paths:
        if not p.is_symlink():
            os.chmod(p, (0o777 if p.is_dir() else 0o666) & ~mask)


def zip_member(name: str, compress_type: int) -> Any:
    """A ``zipfile.ZipInfo`` for ``name`` as ``ZipFile.writestr(name, ...)`` makes it, but dated
    :data:`ZIP_TIME` instead of now."""
    import zipfile

    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.compress_type = compress_type
    info.external_attr = 0o600 << 16  # what zipfile gives a member written by name
    return info


def temporary_path(path: str | Path) -> Path:
    """The name a file is written under before it is renamed to ``path``."""
    path = Path(path)
    return path.with_name(path.name + ".tmp")


TMP_PREFIX = ".tmp-"  # hidden names of what is being written by one writer among several


def writer_tag() -> str:
    """``@host@pid@``: whose a temporary name is (a sweep removes those of dead writers)."""
    return f"@{socket.gethostname()}@{os.getpid()}@"


def unique_temporary_path(path: str | Path) -> Path:
    """A hidden temporary name for ``path`` that no other writer uses (host, pid, random)."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{path.name}{writer_tag()}{uuid.uuid4().hex[:8]}")


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
def atomic_path(path: str | Path, unique: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path``, on error it is removed.
    ``unique``: a name of this writer's own (:func:`unique_temporary_path`), for files that
    several processes may replace at once.

    The folder's guards (:func:`guard_writes`) run before writing and again just before the
    rename that publishes the file."""
    path = Path(path)
    check_write(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = unique_temporary_path(path) if unique else temporary_path(path)
    # A file or link already at the temporary name (a killed writer's, or planted) is removed,
    # never written through: writers open the name with O_TRUNC, which follows a link.
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        yield tmp
        check_write(path)
        follow_umask(tmp)  # e.g. safetensors creates its files 0600
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


def write_text(path: str | Path, text: str, unique: bool = False) -> Path:
    with atomic_path(path, unique) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, obj: Any, indent: int = 2, default: Callable[[Any], Any] | None = None,
               unique: bool = False) -> Path:
    """``obj`` as indented JSON with a final newline; ``default`` turns what JSON has no type for
    into something it has (``str``: paths, dates); ``unique`` as :func:`atomic_path`."""
    return write_text(path, json.dumps(obj, indent=indent, default=default) + "\n", unique)


def save_npz(path: str | Path, **arrays: Any) -> Path:
    """Uncompressed ``np.savez`` of ``arrays`` (written through an open file: numpy would
    otherwise append ``.npz`` to the temporary name). Its members are dated 1980-01-01 already
    (``ZipFile.open(name, "w")``), so the bytes depend on the arrays alone."""
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
    try:
        _finish(steps)
    except KeyboardInterrupt:  # every move done: the interrupt leaves no staging behind
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)


STALE_STAGING_SECONDS = 24 * 3600.0  # a staging folder of another host is stale after this


def _staging_is_stale(folder: Path, prefix: str = ".staging-") -> bool:
    """A staging folder left by a killed writer: ``PREFIX-HOST-PID-XXXX`` of a dead process on
    this host; one of another host (whose processes cannot be asked) or of an older version
    (``.staging-XXXX``) once untouched for :data:`STALE_STAGING_SECONDS`."""
    host, _, rest = folder.name[len(prefix):].rpartition("-")
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


def remove_stale_staging(out: Path, prefix: str = ".staging-") -> list[Path]:
    """Remove the staging folders (``PREFIX*``) killed writers left in ``out`` (never a live
    one's)."""
    removed = []
    for folder in out.glob(glob_escape(prefix) + "*"):
        if folder.is_dir() and not folder.is_symlink() and _staging_is_stale(folder, prefix):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters matched literally."""
    import glob

    return glob.escape(text)


def _writer_tag() -> str:
    """``HOST-PID-``: what a staging name says of its writer (:func:`_staging_is_stale`)."""
    return f"{socket.gethostname()}-{os.getpid()}-"


@contextlib.contextmanager
def staged_folder(folder: str | Path) -> Iterator[Path]:
    """Yield an empty sibling folder ``.NAME.staging-HOST-PID-XXXX`` to write a whole folder
    into; on success it becomes ``folder`` by a rename, so ``folder`` holds either its old files
    or all the new ones, never a mix or a part.

    An existing ``folder`` is first renamed aside (``.NAME.old-HOST-PID-XXXX``), then the staging
    folder takes its name, then the old one is removed: a kill between the two renames leaves no
    ``folder`` (and both siblings, which the next call removes), never a half one. An exception
    while writing removes the staging folder and leaves ``folder`` as it was; once the renames
    have begun an interruption is held back until they are done. ``folder`` must not be a
    symlink (the tool would replace what it points to). Everything published follows the umask.
    """
    folder = Path(folder)
    if folder.is_symlink():
        raise PipelineError(f"{folder}: is a symlink; give the folder itself (nothing written)")
    if folder.exists() and not folder.is_dir():
        raise PipelineError(f"{folder}: exists and is not a folder (nothing written)")
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    check_write(folder)
    staging_prefix, old_prefix = f".{folder.name}.staging-", f".{folder.name}.old-"
    remove_stale_staging(parent, staging_prefix)
    remove_stale_staging(parent, old_prefix)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix + _writer_tag(), dir=parent))
    try:
        yield staging
        check_write(folder)
        follow_umask(staging)  # mkdtemp makes it 0700, some writers their files 0600
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        full = no_space(folder, e)
        if full is not None:
            raise full from None
        raise
    old = parent / f"{old_prefix}{_writer_tag()}{os.urandom(4).hex()}"
    steps = [lambda: _move(folder, old) if folder.is_dir() else None,
             lambda: _move(staging, folder), lambda: shutil.rmtree(old, ignore_errors=True)]
    _finish(steps)


def _move(source: Path, target: Path) -> None:
    """``os.replace`` that may be repeated (an interruption may come right after it)."""
    if source.exists():
        os.replace(source, target)


def _finish(steps: list[Callable[[], object]]) -> None:
    """Run every step in order even through Ctrl-C (a half-done set of renames would leave a
    folder neither old nor new); the interrupt is raised once the last step has run."""
    interrupted: BaseException | None = None
    while steps:
        try:
            while steps:
                steps[0]()
                steps.pop(0)
        except KeyboardInterrupt as e:
            interrupted = e
    if interrupted is not None:
        raise interrupted
