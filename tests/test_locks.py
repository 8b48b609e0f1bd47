"""Owner locks: flock where the file system has it, a renewed lease file where it refuses it."""

import errno
import json
import os
import socket
import time

import pytest

from pipeline import locks
from pipeline.locks import LockHeld, owner_lock


def test_second_holder_is_refused_with_the_first_ones_name(tmp_path):
    path = tmp_path / "run" / ".lock"
    with owner_lock(path, "run directory X"):
        with pytest.raises(LockHeld, match=f"run directory X: in use by pid {os.getpid()} on "
                                           f"{socket.gethostname()}"):
            with owner_lock(path, "run directory X"):
                pass
    with owner_lock(path, "run directory X"):  # released on exit
        pass


@pytest.fixture()
def no_flock(monkeypatch):
    def refuse(fd, operation):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(locks.fcntl, "flock", refuse)


def test_lease_file_where_flock_is_refused(tmp_path, no_flock):
    path = tmp_path / ".lock"
    lease = tmp_path / ".lock.lease"
    with owner_lock(path, "run directory X", lease=0.3):
        assert json.loads(lease.read_text())["pid"] == os.getpid()
        before = lease.stat().st_mtime
        time.sleep(0.45)  # renewed every lease / 3 seconds: never goes stale while held
        assert lease.stat().st_mtime > before
        with pytest.raises(LockHeld, match=r"in use by pid .*\(lease file .*, stale after 0.3 s\)"):
            with owner_lock(path, "run directory X", lease=0.3):
                pass
    assert not lease.exists()


@pytest.mark.parametrize("holder, age, taken", [
    ({"host": "elsewhere", "pid": 1}, 0.0, False),  # fresh lease of another node: respected
    ({"host": "elsewhere", "pid": 1}, 120.0, True),  # not renewed for longer than the lease
    ({"host": socket.gethostname(), "pid": 2 ** 22 + 1}, 0.0, True),  # a dead process here
])
def test_stale_leases_are_taken_over(tmp_path, no_flock, holder, age, taken):
    lease = tmp_path / ".lock.lease"
    lease.write_text(json.dumps(holder))
    old = time.time() - age
    os.utime(lease, (old, old))
    if taken:
        with owner_lock(tmp_path / ".lock", "X", lease=60):
            assert json.loads(lease.read_text())["pid"] == os.getpid()
        assert not lease.exists()
    else:
        with pytest.raises(LockHeld, match="in use by pid 1 on elsewhere"):
            with owner_lock(tmp_path / ".lock", "X", lease=60):
                pass


def test_other_lock_errors_are_not_hidden(tmp_path, monkeypatch):
    def broken(fd, operation):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(locks.fcntl, "flock", broken)
    with pytest.raises(OSError, match="I/O error"):
        with owner_lock(tmp_path / ".lock", "X"):
            pass
