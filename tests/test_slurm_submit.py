"""``--scheduler slurm:`` with an ``sbatch`` that fails: one line with sbatch's message, at once.

A fake ``sbatch`` on ``PATH`` (a shell script) stands for the cluster's: one that rejects the job
the way SLURM does for a wrong account, one that never answers, and none at all (issue 23,
point 3). Before, the client logged dask's tracebacks and waited for a worker for ever.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.parallel import open_executor, parse_scheduler

ROOT = Path(__file__).resolve().parents[1]
STAGES_TESTS = ROOT / "tests" / "stages"
REJECTION = ("sbatch: error: Batch job submission failed: Invalid account or account/partition "
             "combination specified")
EXTRACT_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import extract_fixtures  # registers test_mean_colour
from cli.main import main
raise SystemExit(main(sys.argv[2:]))
"""


def _fake_sbatch(folder: Path, body: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "sbatch"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    return folder


@pytest.fixture
def path_with(monkeypatch):
    def use(folder: Path) -> None:
        monkeypatch.setenv("PATH", str(folder))  # nothing else: no real sbatch either
    return use


def test_submit_timeout_is_a_spec_option():
    assert dict(parse_scheduler("slurm:2,submit_timeout=30").options) == {"submit_timeout": 30.0}
    with pytest.raises(PipelineError, match="submit_timeout must be a number"):
        parse_scheduler("slurm:2,submit_timeout=soon")


@pytest.mark.slow
@pytest.mark.parametrize("body, timeout, message", [
    (f"echo '{REJECTION}' >&2\nexit 1", None, f"sbatch failed (exit code 1): {REJECTION}"),
    (f"{shutil.which('sleep')} 60", 2, "sbatch did not answer within 2 s"),
    (None, None, "cannot run sbatch (No such file or directory): submit from a SLURM login node"),
], ids=["rejects", "hangs", "missing"])
def test_failed_sbatch_stops_at_once(tmp_path, path_with, body, timeout, message):
    bin_dir = tmp_path / "bin"
    path_with(_fake_sbatch(bin_dir, body) if body is not None else bin_dir)
    spec = "slurm:2,cores=1,memory=1GB" + (f",submit_timeout={timeout}" if timeout else "")
    started = time.monotonic()
    with pytest.raises(PipelineError) as caught:
        with open_executor(spec):
            pass
    assert time.monotonic() - started < 30  # the hanging sbatch sleeps 60 s: it was killed
    assert str(caught.value).startswith(f"scheduler {parse_scheduler(spec)}: {message}")
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_extract_with_a_rejecting_sbatch_is_one_line(tmp_path):
    """The whole command: exit 1 within seconds, one error line carrying sbatch's message."""
    sys.path.insert(0, str(STAGES_TESTS))
    from extract_fixtures import make_dataset

    manifests = make_dataset(tmp_path, n_clips=2, n_frames=8)
    bin_dir = _fake_sbatch(tmp_path / "bin", f"echo '{REJECTION}' >&2\nexit 1")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": str(bin_dir)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", EXTRACT_CHILD, str(STAGES_TESTS), "extract", "--manifests",
         str(manifests), "--store", str(tmp_path / "f.zarr"), "-e", "test_mean_colour",
         "--scheduler", "slurm:2,cores=1,memory=1GB"],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert time.monotonic() - started < 60
    # Progress lines ("[0:00:00] checking store ...") come first; then the error and nothing else.
    lines = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("[")]
    assert lines[0] == (f"error: scheduler slurm:2,cores=1,memory=1GB: sbatch failed (exit code 1):"
                        f" {REJECTION}"), done.stderr
    assert lines[1:] == ["(run with --debug for the traceback)"], done.stderr
