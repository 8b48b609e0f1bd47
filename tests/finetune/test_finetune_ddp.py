"""``torchrun --nproc-per-node 2`` runs the fine-tune with DDP over gloo on CPU: both processes
train, rank 0 writes a folder that stage one loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline.features.weights_record import read_record
from pipeline.finetune.loop import work_dir

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_processes_gloo(demo_manifests, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", "2", "-m", "cli.main", "finetune", "--manifests", str(demo_manifests),
            "--out", str(out), "--set", "epochs=2", "--set", "batch_size=16",
            "--set", "model=test_resnet"]
    done = subprocess.run(args, cwd=ROOT, env=env, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("selected on train-dev") == 1  # rank 0 reports, rank 1 is quiet
    record = read_record(out)
    assert record.epochs_run == 2 and record.family == "timm"
    history = json.loads((work_dir(out) / "history.json").read_text())
    assert history["processes"] == 2
    # Both ranks trained the same model (DDP averages gradients): rank 0's saved state is that of
    # every step's full batch, so its weights moved from the initial ones.
    state = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 2 and state["complete"]
