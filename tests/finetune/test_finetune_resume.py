"""A fine-tune killed at any moment (SIGKILL) or stopped by SIGTERM (a batch system's time limit)
and rerun writes the same weights, byte for byte, as one never interrupted."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pipeline.features.weights_record import WEIGHTS_NAME, read_record
from pipeline.finetune.config import build_config
from pipeline.finetune.loop import work_dir
from stages.finetune import finetune

ROOT = Path(__file__).resolve().parents[2]
SETS = ["epochs=2", "patience=2", "batch_size=16", "model=test_resnet"]


def _command(manifests: Path, out: Path) -> list[str]:
    args = [sys.executable, "-m", "cli.main", "finetune", "--manifests", str(manifests),
            "--out", str(out)]
    for s in SETS:
        args += ["--set", s]
    return args


def _start(manifests: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(_command(manifests, out), cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _after_first_epoch(proc: subprocess.Popen, out: Path, timeout: float = 300) -> None:
    """Wait until the first epoch's checkpoint is in place (the process is then in epoch 2)."""
    deadline = time.monotonic() + timeout
    while not (work_dir(out) / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)


def _rerun(manifests: Path, out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(_command(manifests, out), cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_sigkill_then_rerun_and_sigterm_then_rerun_give_the_uninterrupted_weights(
        demo_manifests, tmp_path):
    reference = tmp_path / "reference"
    finetune(build_config(demo_manifests, sets=SETS), reference)
    expected = (reference / WEIGHTS_NAME).read_bytes()
    assert read_record(reference).epochs_run == 2

    killed = tmp_path / "killed"
    proc = _start(demo_manifests, killed)
    _after_first_epoch(proc, killed)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (killed / WEIGHTS_NAME).exists()  # nothing half-made where a reader looks
    done = _rerun(demo_manifests, killed)
    assert "resumed after epoch" in done.stdout
    assert (killed / WEIGHTS_NAME).read_bytes() == expected

    stopped = tmp_path / "stopped"
    proc = _start(demo_manifests, stopped)
    _after_first_epoch(proc, stopped)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "terminated (SIGTERM)" in stderr, stderr
    state = torch.load(work_dir(stopped) / "checkpoint.pt", weights_only=True)  # a whole one
    assert state["epoch"] == 1 and not state["complete"]
    assert not list(work_dir(stopped).glob("*.tmp"))
    _rerun(demo_manifests, stopped)
    assert (stopped / WEIGHTS_NAME).read_bytes() == expected
