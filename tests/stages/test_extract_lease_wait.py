"""An ``extract`` waiting on a lease another host holds says so at once and then periodically,
naming the holder, instead of saying nothing (issue 23, point 9)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from extract_fixtures import make_dataset
from pipeline.features.store_format import meta_dir

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# extract with its store's locks in lease mode (a filesystem that refuses flock), and a note
# every 0.5 s instead of every 30 s.
CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import extract_fixtures  # registers test_mean_colour
from pipeline import locks
locks._NO_FLOCK.add(sys.argv[2])
locks.WAIT_NOTE_SECONDS = 0.5
from cli.main import main
raise SystemExit(main(sys.argv[3:]))
"""


def test_extract_names_the_other_hosts_lease_it_waits_for(tmp_path):
    manifests = make_dataset(tmp_path, n_clips=1, n_frames=4)
    store = tmp_path / "f.zarr"
    locks_dir = meta_dir(store) / "locks"
    locks_dir.mkdir(parents=True)
    lease = locks_dir / "root.lease"  # another node's extract records into the store
    lease.write_text(json.dumps({"host": "node7", "pid": 4242, "since": "2026-01-01T00:00:00Z",
                                 "command": "fer-pipeline extract"}))
    release = threading.Event()

    def other_host() -> None:  # renews its lease until released (or 90 s), then finishes
        deadline = time.monotonic() + 90
        while not release.wait(0.1) and time.monotonic() < deadline:
            os.utime(lease)
        lease.unlink()

    holder = threading.Thread(target=other_host)
    holder.start()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(HERE), str(locks_dir), "extract", "--manifests",
         str(manifests), "--store", str(store), "-e", "test_mean_colour"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    try:
        for line in child.stderr:  # the other host finishes after the second note
            lines.append(line.rstrip("\n"))
            if sum(x.startswith("waiting for") for x in lines) == 2:
                release.set()
        code = child.wait(timeout=300)
    finally:
        release.set()
        holder.join()
        child.kill()
        child.wait()
    stderr = "\n".join(lines)
    assert code == 0, stderr
    notes = [line for line in lines if line.startswith("waiting for")]
    assert len(notes) >= 2, stderr  # at once, then every 0.5 s while it waited
    assert notes[0] == (f"waiting for {lease}: held by pid 4242 on node7 since 2026-01-01T00:00:00Z"
                        " (fer-pipeline extract); it is taken over if not renewed for 120 s")
