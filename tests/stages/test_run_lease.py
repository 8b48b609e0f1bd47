"""A run directory's owner under faults (issue 23, points 8 and 9).

* Lease mode (no flock: Lustre without ``-o flock``) with a stalled holder: a ``fuse`` stopped
  (SIGSTOP) past its lease loses the run to a second one, and on waking stops in one line
  before its next write instead of writing over the new owner's files.
* ``ensemble`` against a run being rewritten says so, and names the writer.
* A rerun of a complete run on a read-only mount has nothing to do: exit 0, no ``owner.lock``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cli.main import main
from fusion.synthetic import make_dataset
from pipeline import io, locks
from pipeline.data.manifest import feature_digest
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.locks import owner_lock
from pipeline.runs.record import read_run

REPO = Path(__file__).resolve().parents[2]
QUICK = ["--method", "image", "--set", "train.patience=1000"]
LEASE = 1.0  # seconds: short, so that a test can stall a holder past it
# A fuse whose run directory is in lease mode, as on a filesystem that refuses flock.
LEASE_CHILD = """
import sys
from pipeline import locks
locks._NO_FLOCK.add(sys.argv[1])
locks.LEASE_SECONDS = float(sys.argv[2])
from cli.main import main
raise SystemExit(main(sys.argv[3:]))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("lease"), splits={"train": 2, "val": 1}, frames=40)
    FeatureStore(data.store, "a").record_manifest({c.clip_id: feature_digest(c) for c in data.clips})
    return data


def _args(data, out, *extra):
    return ["fuse", "--store", str(data.store), "--manifests", str(data.manifests),
            "--out", str(out), *QUICK, *extra]


@pytest.mark.slow  # a second interpreter imports torch
def test_stalled_lease_holder_stops_before_writing_when_taken_over(data, tmp_path, monkeypatch):
    run = tmp_path / "shared"
    run.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        [sys.executable, "-c", LEASE_CHILD, str(run), str(LEASE),
         *_args(data, tmp_path, "--name", "shared", "--set", "train.epochs=100000")],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "checkpoint.pt").exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        assert (run / "owner.lease").exists()  # lease mode
        first.send_signal(signal.SIGSTOP)  # its renewer stops with it
        time.sleep(LEASE + 0.5)
        monkeypatch.setattr(locks, "_NO_FLOCK", {str(run)})
        with owner_lock(run / "owner", f"run directory {run}", lease=LEASE):  # taken over: stale
            assert json.loads((run / "owner.lease").read_text())["pid"] == os.getpid()
            io.write_json(run / "metrics.json", {"writer": "second"})
            before = (run / "checkpoint.pt").read_bytes()
            first.send_signal(signal.SIGCONT)
            code = first.wait(timeout=60)
            stderr = first.stderr.read()
            # the first stopped before its next write: the second's files are as it left them
            assert json.loads((run / "metrics.json").read_text()) == {"writer": "second"}
            assert (run / "checkpoint.pt").read_bytes() == before
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGCONT)
            first.kill()
            first.wait(30)
    assert code == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"error: run directory {run}: this process lost its lease to "
                                f"pid {os.getpid()} on ")
    assert "stalled for more than the 1 s lease" in errors[0] and "Traceback" not in stderr


def test_ensemble_names_the_fuse_that_is_rewriting_a_run(tmp_path):
    run = tmp_path / "image"
    run.mkdir()
    with owner_lock(run / "owner", f"run directory {run}"):  # a fuse rewriting it (flock)
        with pytest.raises(PipelineError, match=rf"{run}: being written by pid {os.getpid()} on "
                                                r".*; run ensemble when it has finished"):
            read_run(run)
    (run / "checkpoint.pt").write_bytes(b"")  # interrupted mid-training, nobody writing now
    with pytest.raises(PipelineError, match="an unfinished run .*rerun its fuse command"):
        read_run(run)
    (run / "checkpoint.pt").unlink()
    with pytest.raises(PipelineError, match="not a run directory written by fuse"):
        read_run(run)


def test_ensemble_sees_a_lease_holder_too(tmp_path, monkeypatch):
    run = tmp_path / "image"
    run.mkdir()
    monkeypatch.setattr(locks, "_NO_FLOCK", {str(run)})
    with owner_lock(run / "owner", f"run directory {run}", lease=60):
        with pytest.raises(PipelineError, match=rf"being written by pid {os.getpid()}"):
            read_run(run)


def test_no_lock_where_the_run_directory_is_read_only(tmp_path, monkeypatch):
    """Where the lock file cannot be made (EROFS), reading goes on and a write fails in one line."""
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(locks, "hold", read_only)
    run = tmp_path / "image"
    run.mkdir()
    with owner_lock(run / "owner", f"run directory {run}"):
        with pytest.raises(PipelineError, match=rf"run directory {run}: cannot write {run} "
                                                r"\(Read-only file system\); it is read-only here"):
            io.write_json(run / "metrics.json", {})
    io.write_json(run / "metrics.json", {})  # the guard ends with the lock


@pytest.fixture
def read_only_mount(tmp_path):
    """``tmp_path/ro``: a read-only bind mount of ``tmp_path/rw`` (needs root; skipped otherwise)."""
    source, target = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    target.mkdir()
    done = subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot make a read-only mount here ({done.stderr.strip()})")
    try:
        yield source, target
    finally:
        subprocess.run(["umount", str(target)], check=False)


def test_rerun_of_a_complete_run_on_a_read_only_mount(data, read_only_mount, capsys):
    source, target = read_only_mount
    assert main(_args(data, source, "--set", "train.epochs=1")) == 0
    capsys.readouterr()
    code = main(_args(data, target, "--set", "train.epochs=1"))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    # an incomplete one cannot be finished there: one line, not a traceback
    (source / "image" / "metrics.json").unlink()
    code = main(_args(data, target, "--set", "train.epochs=1"))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 1 and "Read-only file system" in err and "Traceback" not in err
