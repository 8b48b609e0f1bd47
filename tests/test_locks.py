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


@pytest.mark.parametrize("name", ["owner.lock", "owner.lease"])
def test_a_lock_or_lease_file_that_is_a_link_is_refused_and_its_target_untouched(
        tmp_path, monkeypatch, name):
    if name.endswith(".lease"):
        monkeypatch.setattr(locks, "_NO_FLOCK", {str(tmp_path / "run")})
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "run").mkdir()
    os.symlink(victim, tmp_path / "run" / name)
    with pytest.raises(locks.LinkRefused) as error:
        with owner_lock(tmp_path / "run" / "owner", "run directory run"):
            pass
    assert str(error.value).startswith(f"{tmp_path / 'run' / name}: a lock file is a symbolic link")
    assert "\n" not in str(error.value)
    assert victim.read_text() == "precious\n" and (tmp_path / "run" / name).is_symlink()
    with pytest.raises(locks.LinkRefused):  # the store's clip locks too
        with locks.hold(tmp_path / "run", "owner"):
            pass
    assert victim.read_text() == "precious\n"


def test_a_new_lock_file_is_created_exclusively_and_not_followed(tmp_path, monkeypatch):
    opened = []
    real_open = os.open
    monkeypatch.setattr(locks.os, "open", lambda p, f, *a: opened.append(f) or real_open(p, f, *a))
    with owner_lock(tmp_path / "run" / "owner", "run"):
        pass
    assert opened and all(f & os.O_NOFOLLOW for f in opened)
    assert opened[0] & os.O_EXCL and opened[0] & os.O_CREAT


def test_a_failed_body_leaves_no_folder_made_for_the_lock(tmp_path):
    with pytest.raises(RuntimeError):
        with owner_lock(tmp_path / "a" / "run" / "owner", "run"):
            raise RuntimeError("failed")
    assert os.listdir(tmp_path) == []
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with owner_lock(tmp_path / "kept" / "owner", "run"):
            (tmp_path / "kept" / "checkpoint.pt").write_text("resume state")
            raise RuntimeError("failed")
    assert sorted(os.listdir(tmp_path / "kept")) == ["checkpoint.pt", "owner.lock"]
