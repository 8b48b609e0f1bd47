"""Owner locks: one process at a time may write a directory; a second is refused in one line.

:func:`owner_lock` takes ``flock`` on a lock file and writes who holds it (host, pid, command,
start time) into it, so a refused process can say who is in the way. The kernel releases a
``flock`` when its holder dies, even by SIGKILL: a stale lock never needs clearing by hand.

Where the file system refuses ``flock`` (Lustre mounted without ``-o flock``, some NFS setups:
``ENOSYS``, ``ENOLCK``, ``EOPNOTSUPP``), the lock falls back to a **lease file** created with
``O_EXCL`` beside it and renewed by a daemon thread every ``lease / 3`` seconds. A lease whose
file has not been renewed for ``lease`` seconds, or whose holder is a dead process on this host,
is stale and taken over. What each file system gives:

* local disks, NFSv4, Lustre with ``-o flock``, GPFS: ``flock`` across all nodes; a dead
  holder's lock is released at once;
* Lustre ``-o localflock``: ``flock`` works but only within one node; two nodes may both get the
  lock (correctness must not depend on it: every file is still written aside and renamed);
* file systems refusing ``flock``: the lease file; a killed holder blocks others until its lease
  runs out (``lease`` seconds, 60 by default).

Locks here only keep two writers apart; every output is still written atomically
(:mod:`pipeline.io`), so a lock that fails to exclude costs duplicate work, never a torn file.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

from pipeline.errors import PipelineError

LEASE_SECONDS = 60.0  # a lease not renewed for this long is stale
# errnos with which a file system says it does not do flock
FLOCK_REFUSED = {errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL}


class LockHeld(PipelineError):
    """Another process holds the lock; the message names it."""


def holder_info() -> dict:
    """Who this process is, as written into a lock file."""
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "command": " ".join([os.path.basename(sys.argv[0] or "python"), *sys.argv[1:]])[:300]}


def describe(info: dict | None) -> str:
    """A holder in words: ``pid 123 on node7 since ... (fer-pipeline fuse ...)``."""
    if not info:
        return "another process (no holder recorded)"
    text = f"pid {info.get('pid', '?')} on {info.get('host', '?')} since {info.get('since', '?')}"
    return text + (f" ({info['command']})" if info.get("command") else "")


def _read(path: Path) -> dict | None:
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _alive_here(info: dict) -> bool:
    """False only when the holder is certainly dead: a process of this host that is gone."""
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _lease(path: Path, what: str, lease: float) -> Iterator[None]:
    """The lease-file lock (for file systems without flock)."""
    lease_path = path.with_name(path.name + ".lease")
    mine = holder_info()
    for _attempt in range(2):
        try:
            fd = os.open(lease_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            info = _read(lease_path)
            try:
                age = time.time() - lease_path.stat().st_mtime
            except FileNotFoundError:
                continue  # released meanwhile
            if age < lease and (info is None or _alive_here(info)):
                raise LockHeld(f"{what}: in use by {describe(info)}; wait for it to finish"
                               f" (lease file {lease_path}, stale after {lease:g} s)") from None
            # Stale: move it aside under a unique name (only one taker wins the rename).
            with contextlib.suppress(FileNotFoundError):
                os.replace(lease_path, lease_path.with_name(f"{lease_path.name}.stale-{os.getpid()}"))
                os.unlink(lease_path.with_name(f"{lease_path.name}.stale-{os.getpid()}"))
    else:
        raise LockHeld(f"{what}: could not take the lease file {lease_path}")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(mine, f)
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(lease / 3):
            with contextlib.suppress(OSError):
                os.utime(lease_path)

    thread = threading.Thread(target=renew, name=f"lease {lease_path.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        if _read(lease_path) == mine:
            lease_path.unlink(missing_ok=True)


@contextlib.contextmanager
def owner_lock(path: str | Path, what: str, lease: float = LEASE_SECONDS) -> Iterator[None]:
    """Hold ``path`` (a lock file, created if needed) for the duration, or raise :class:`LockHeld`
    naming the holder. ``what`` names the thing locked in the message (e.g. the run directory)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise PipelineError(f"{what}: cannot write {path} ({e.strerror})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(f"{what}: in use by {describe(_read(path))}; wait for it to finish"
                           " or write elsewhere") from None
        except OSError as e:
            if e.errno not in FLOCK_REFUSED:
                raise
            os.close(fd)
            fd = -1
            with _lease(path, what, lease):
                yield
            return
        # Holder info goes into the locked file itself: readers see it while the lock is held.
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_info()).encode(), 0)
        yield
    finally:
        if fd >= 0:
            os.close(fd)  # releases the flock
