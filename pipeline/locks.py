"""Advisory locks: ``flock`` where the filesystem has it, lease files where it refuses it.

Two users: the feature store's writers (:func:`hold`, one lock per clip and for the root) and the
run directories of stage two (:func:`owner_lock`: one writer per run; a second is refused in one
line naming the first). A lock only saves duplicate work or a confusing second writer; outputs
stay correct without one (arrays are written aside and renamed into place, see
:mod:`pipeline.features.store`; every run file is written atomically, see :mod:`pipeline.io`).

**flock** (local disks, NFSv4, GPFS, Lustre mounted with ``-o flock``): released by the kernel
when the holder dies, so a SIGKILL leaves no stale lock. On NFS mounted with ``local_lock=flock``
or Lustre with ``-o localflock`` the lock is node-local: two nodes may duplicate a clip's work
(never corrupt it).

**Lease files** (where ``flock`` raises ENOSYS, EOPNOTSUPP, ENOLCK or EINVAL: Lustre without
``-o flock``, some NFS setups): ``NAME.lease`` is created with ``O_EXCL`` and holds the holder's host, pid and
time. The holder renews it (its mtime) every third of :data:`LEASE_SECONDS`; a lease not renewed
for :data:`LEASE_SECONDS`, or held by a dead process on this host, is stale and taken over. The
nodes' clocks must agree to well within the lease (NTP does); a takeover race between two
waiters is settled by the rename of the stale file, which only one of them can make.

**Links.** Lock and lease files are opened with ``O_NOFOLLOW`` and created with ``O_EXCL``
(:func:`open_lock_file`): one that is a symbolic link (or not a regular file) is refused in one
line naming it, so a planted ``owner.lock -> somefile`` never gets written through.

**Failed runs.** :func:`owner_lock` removes the lock file, and the folder when it made it, if the
body fails and the folder holds nothing else: a failed run leaves no empty run folder behind.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import math
import os
import socket
import stat
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

from pipeline import io
from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0  # a lease not renewed for this long is stale
WAIT_NOTE_SECONDS = 30.0  # a blocked waiter logs who holds the lease at once, then this often
_POLL_SECONDS = 0.2  # how often a blocked waiter retries
_REFUSED = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK, errno.EINVAL}
_NO_FLOCK: set[str] = set()  # folders whose filesystem refused flock (checked once per process)


class LockHeld(PipelineError):
    """Another process holds the lock; the message names it."""


def holder_info() -> dict:
    """Who this process is, as written into a lock or lease file."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300]}


def describe(info: dict | None) -> str:
    """A holder in words: ``pid 123 on node7 since ... (fer-pipeline fuse ...)``."""
    if not info:
        return "another process (no holder recorded)"
    text = f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
    return text + (f" ({info['command']})" if info.get("command") else "")


class LinkRefused(PipelineError):
    """A lock or lease file is a symbolic link (or not a regular file): never written through."""


def refuse_link(path: Path) -> LinkRefused:
    return LinkRefused(f"{path}: a lock file is a symbolic link or not a regular file; refused "
                       "(locks are never written through links): remove it if you made it")


def open_lock_file(path: Path, flags: int) -> int:
    """``path`` opened with ``flags`` and without following a link: created with ``O_EXCL``
    when it is new, else opened as it is; :class:`LinkRefused` for a link or a non-file."""
    try:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
    except FileExistsError:
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise refuse_link(path) from None
            raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise refuse_link(path)
    return fd


def _holder() -> str:
    return json.dumps({**holder_info(), "time": time.time(), "id": uuid.uuid4().hex})


def _read(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _stale(path: Path, lease_seconds: float) -> str | None:
    """The lease's content if it is stale (else None, also when it is gone)."""
    try:
        text = path.read_text(encoding="utf-8")
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    try:
        holder = json.loads(text)
    except ValueError:  # written halfway by a holder that died: stale once old enough
        holder = {}
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return text  # its holder died on this host
        except PermissionError:
            pass  # alive, another user's
    return text if age > lease_seconds else None


def _take_over(path: Path, seen: str) -> None:
    """Move a stale lease aside, unless another waiter replaced it first (then leave theirs)."""
    aside = path.with_name(f"{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if aside.read_text(encoding="utf-8") != seen:  # a fresh lease of a faster waiter: put it back
        with contextlib.suppress(FileExistsError):
            os.link(aside, path)
    aside.unlink()


def _try_lease(path: Path, lease_seconds: float) -> str | None:
    """Create the lease; its content when we hold it, None when another live holder does."""
    for _ in range(2):
        body = _holder()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666)
        except FileExistsError:
            if path.is_symlink():
                raise refuse_link(path) from None
            seen = _stale(path, lease_seconds)
            if seen is None:
                return None
            _take_over(path, seen)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        return body
    return None


def _ours(path: Path, body: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == body
    except FileNotFoundError:
        return False


class LeaseLost(PipelineError):
    """This process's lease was taken over (it stalled past the lease): it must stop writing."""


class Lease:
    """A lease this process holds (truthy, like ``True`` from :func:`hold`)."""

    def __init__(self, path: Path, body: str, lease_seconds: float) -> None:
        self.path, self.body, self.lease_seconds = path, body, lease_seconds

    def check(self, what: str) -> None:
        """Renew the lease, or raise :class:`LeaseLost` when another process holds it now.

        Called before each write: a holder that was stopped (SIGSTOP, a suspended job, a VM
        paused) for longer than the lease finds on waking that a waiter took the lease over as
        stale, and stops instead of writing over the new owner's files. (A holder that wakes
        in the instant a waiter is taking over may still make one write: the lease cannot
        close that window, flock can.)
        """
        if not _ours(self.path, self.body):
            raise LeaseLost(f"{what}: this process lost its lease to {describe(_read(self.path))}"
                            f" (it was stalled for more than the {self.lease_seconds:g} s lease);"
                            " stopped without writing: the other process owns it now")
        with contextlib.suppress(OSError):
            os.utime(self.path, follow_symlinks=False)


@contextlib.contextmanager
def _lease(path: Path, blocking: bool, lease_seconds: float) -> Iterator[Lease | bool]:
    body = _try_lease(path, lease_seconds)
    noted = -math.inf  # when the last "waiting" line was logged
    while body is None and blocking:
        if time.monotonic() - noted >= WAIT_NOTE_SECONDS:
            # At once, then periodically: a lease of another host can hold for minutes.
            noted = time.monotonic()
            log.warning("waiting for %s: held by %s; it is taken over if not renewed for %g s",
                        path, describe(_read(path)), lease_seconds)
        time.sleep(_POLL_SECONDS)
        body = _try_lease(path, lease_seconds)
    if body is None:
        yield False
        return
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease_seconds / 3):
            if not _ours(path, body):
                return  # taken over (we were presumed dead): the writes stay correct regardless
            with contextlib.suppress(OSError):
                os.utime(path, follow_symlinks=False)

    renewer = threading.Thread(target=renew, name="fer-lease", daemon=True)
    renewer.start()
    try:
        yield Lease(path, body, lease_seconds)
    finally:
        stop.set()
        renewer.join()
        if _ours(path, body):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


@contextlib.contextmanager
def hold(folder: Path, name: str, blocking: bool = True,
         lease_seconds: float | None = None) -> Iterator[Lease | bool]:
    """Hold lock ``name`` in ``folder``; yields False when another process holds it (non-blocking),
    else True (flock) or the :class:`Lease` (lease file)."""
    folder.mkdir(parents=True, exist_ok=True)
    lease = LEASE_SECONDS if lease_seconds is None else lease_seconds
    if str(folder) in _NO_FLOCK:
        with _lease(folder / f"{name}.lease", blocking, lease) as got:
            yield got
        return
    fd = open_lock_file(folder / f"{name}.lock", os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            got = True
        except BlockingIOError:
            got = False
        except OSError as e:
            if e.errno not in _REFUSED:
                raise
            _NO_FLOCK.add(str(folder))
            got = None
        if got is not None:
            yield got
            return
    finally:
        os.close(fd)  # closing releases the flock
    with _lease(folder / f"{name}.lease", blocking, lease) as got:
        yield got


@contextlib.contextmanager
def owner_lock(path: str | Path, what: str, lease: float | None = None) -> Iterator[None]:
    """Hold the lock ``path`` for the duration, or raise :class:`LockHeld` naming the holder.

    ``what`` names the thing locked in messages (e.g. the run directory). The holder's host, pid,
    start time and command are written into the lock file (or the lease), so a refused process
    can say who is in the way. With a lease (:data:`LEASE_SECONDS` unless ``lease``), every
    write under the lock's folder through :mod:`pipeline.io` first renews it and checks that it
    is still ours (:meth:`Lease.check`, raising :class:`LeaseLost`). Where the folder is
    read-only (no lock file can be made) nobody writes through this mount: the body runs without
    a lock, and a write it tries fails in one line.
    """
    path = Path(path)
    lease = LEASE_SECONDS if lease is None else lease
    made = missing_folders(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PipelineError(f"{what}: cannot write {path.parent} ({e.strerror})") from None
    failed = True
    try:
        with _owned(path, what, lease):
            yield
        failed = False
    finally:
        if failed:  # the lock holds nothing now: take back the folders it made, where empty
            for folder in made:
                with contextlib.suppress(OSError):
                    folder.rmdir()


def missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    made = []
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    return made


@contextlib.contextmanager
def _owned(path: Path, what: str, lease: float) -> Iterator[None]:
    lock_file = path.parent / f"{path.name}.lock"
    with contextlib.ExitStack() as stack:
        try:
            got = stack.enter_context(hold(path.parent, path.name, blocking=False,
                                           lease_seconds=lease))
        except OSError as e:
            if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise
            got = None
            stack.enter_context(io.guard_writes(path.parent, _refuse(what, path.parent, e)))
        if got is False:
            lease_file = path.parent / f"{path.name}.lease"
            if lease_file.exists():
                raise LockHeld(f"{what}: in use by {describe(_read(lease_file))}; wait for it to"
                               f" finish (lease file {lease_file}, stale after {lease:g} s)")
            raise LockHeld(f"{what}: in use by {describe(_read(lock_file))};"
                           " wait for it to finish or write elsewhere")
        if isinstance(got, Lease):
            stack.enter_context(io.guard_writes(path.parent, lambda: got.check(what)))
        if got is True:
            with contextlib.suppress(OSError):  # informational only: the lock holds without it
                fd = os.open(lock_file, os.O_WRONLY | os.O_NOFOLLOW)
                try:
                    os.ftruncate(fd, 0)
                    os.pwrite(fd, json.dumps(holder_info()).encode(), 0)
                finally:
                    os.close(fd)
        try:
            yield
        except BaseException:
            # A failed run leaves no bare folder holding the lock: the lock file goes while it
            # is still held (a process opening it after this makes its own), unless the folder
            # holds anything else (then a resume may need it, and the lock file is harmless).
            with contextlib.suppress(OSError):
                if got is True and set(os.listdir(path.parent)) <= {lock_file.name, f"{path.name}.lease"}:
                    lock_file.unlink()
            raise


def _refuse(what: str, folder: Path, error: OSError) -> Callable[[], None]:
    """A write guard for a folder where no lock could be made: every write fails in one line."""
    def check() -> None:
        raise PipelineError(f"{what}: cannot write {folder} ({error.strerror}); it is read-only"
                            " here: rerun where it is writable, or write elsewhere")
    return check


def held_by(path: str | Path) -> dict | None:
    """Who holds the owner lock ``path`` now (host, pid, command, ...), or None when nobody does.

    Takes nothing: a shared flock probe on the lock file (read-only opening, so a read-only
    mount works), or a fresh lease file. For readers that must not mistake a run being
    rewritten for a broken one.
    """
    path = Path(path)
    lease_file = path.parent / f"{path.name}.lease"
    if lease_file.exists() and _stale(lease_file, LEASE_SECONDS) is None:
        return _read(lease_file) or {}
    lock_file = path.parent / f"{path.name}.lock"
    try:
        fd = os.open(lock_file, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(lock_file) or {}
    except OSError:
        return None  # no flock here: only a lease could tell, and there is none
    finally:
        os.close(fd)  # closing releases the probe
    return None
