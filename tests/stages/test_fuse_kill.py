"""SIGKILL during `fer-pipeline fuse --method mfm`, then the same command: the run resumes from its
last checkpoint and ends with exactly the predictions of an uninterrupted run (issue 14)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from fusion.synthetic import make_dataset
from pipeline.runs.predictions import Predictions, prediction_path

REPO = Path(__file__).resolve().parents[2]
OUTPUTS = ("fusion", "image", "audio")


def _args(data, out):
    return ["fuse", "--method", "mfm", "--store", str(data.store), "--manifests",
            str(data.manifests), "--out", str(out), "--set", "train.epochs=6",
            "--set", "train.patience=1000", "--set", "train.select_on=val"]


def _predictions(run: Path) -> dict:
    return {(o, k): v for o in OUTPUTS for k, v in Predictions(prediction_path(run, "val", o)).items()}


@pytest.mark.slow  # a second interpreter imports torch
def test_sigkill_mid_fuse_then_rerun_equals_an_uninterrupted_run(tmp_path):
    data = make_dataset(tmp_path / "data", splits={"train": 3, "val": 2}, frames=60)
    assert main(_args(data, tmp_path / "whole")) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-m", "cli.main", *_args(data, tmp_path / "cut")],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    checkpoint = tmp_path / "cut" / "mfm" / "checkpoint.pt"
    deadline = time.monotonic() + 180
    try:
        while not checkpoint.exists():  # at least one epoch is saved: kill mid-run
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        child.kill()
        child.wait()
    assert not (tmp_path / "cut" / "mfm" / "metrics.json").exists(), "killed too late to test"
    assert main(_args(data, tmp_path / "cut")) == 0
    whole, cut = _predictions(tmp_path / "whole" / "mfm"), _predictions(tmp_path / "cut" / "mfm")
    assert whole.keys() == cut.keys() and all(np.array_equal(whole[k], cut[k]) for k in whole)
