"""Staging folders of killed writers (``ensemble`` runs) are removed by the next one; a live
run's never (issue 23, point 9)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pipeline import io

ROOT = Path(__file__).resolve().parents[1]
HOST = socket.gethostname()


def _staging(out: Path, name: str, age: float = 0.0) -> Path:
    folder = out / name
    folder.mkdir(parents=True)
    (folder / "scores.json").write_text("{}")
    if age:
        old = time.time() - age
        os.utime(folder, (old, old))
    return folder


def test_only_stale_staging_folders_are_removed(tmp_path):
    child = subprocess.Popen(["true"])
    child.wait()  # its pid is now free: a killed writer's
    dead = _staging(tmp_path, f".staging-{HOST}-{child.pid}-abc")
    live = _staging(tmp_path, f".staging-{HOST}-{os.getpid()}-def")
    other_fresh = _staging(tmp_path, ".staging-node7-123-ghi")
    other_old = _staging(tmp_path, ".staging-node7-456-jkl", age=io.STALE_STAGING_SECONDS + 60)
    legacy_old = _staging(tmp_path, ".staging-k2j3h4", age=io.STALE_STAGING_SECONDS + 60)
    with io.staged_files(tmp_path, "scores.json") as staging:
        assert staging.name.startswith(f".staging-{HOST}-{os.getpid()}-")
        (staging / "scores.json").write_text('{"new": 1}')
    assert not dead.exists() and not other_old.exists() and not legacy_old.exists()
    assert live.exists() and other_fresh.exists()
    assert (tmp_path / "scores.json").read_text() == '{"new": 1}'


KILLED_WRITER = """
import sys, time
from pipeline import io
with io.staged_files(sys.argv[1], "scores.json") as staging:
    (staging / "report.html").write_text("half")
    print(staging, flush=True)
    time.sleep(60)
"""


def test_the_staging_folder_of_a_killed_writer_goes_with_the_next_run(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(tmp_path)],
                             env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, text=True)
    try:
        staging = Path(child.stdout.readline().strip())
        assert staging.is_dir()
        with io.staged_files(tmp_path, "scores.json") as mine:  # the writer is alive: kept
            (mine / "scores.json").write_text("{}")
        assert staging.is_dir()
        child.send_signal(signal.SIGKILL)  # no cleanup at all
        child.wait(30)
    finally:
        child.kill()
        child.wait()
    assert staging.is_dir()
    with io.staged_files(tmp_path, "scores.json") as mine:
        (mine / "scores.json").write_text("{}")
    assert not staging.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]
