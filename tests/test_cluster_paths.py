"""Paths on a cluster: a dask worker started in another directory writes into the client's store.

Relative ``--store``, ``--manifests``, media paths in the manifest and ``--weights`` are made
absolute before anything reaches a worker, and the client checks that the store it reads holds
every array the workers reported (issue 23, point 4).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError

ROOT = Path(__file__).resolve().parents[1]
STAGES_TESTS = ROOT / "tests" / "stages"
sys.path.insert(0, str(STAGES_TESTS))

from extract_fixtures import make_dataset, store_arrays  # noqa: E402  (needs the path above)


@pytest.fixture
def worker_elsewhere(tmp_path):
    """A dask scheduler and one worker whose working directory is ``tmp_path/worker``."""
    path = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(STAGES_TESTS)]),
           "OMP_NUM_THREADS": "1"}
    (tmp_path / "worker").mkdir()
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--scheduler-file", str(path),
         "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert time.monotonic() < deadline and scheduler.poll() is None, "no scheduler file"
            time.sleep(0.2)
        # The worker imports extract_fixtures (test_mean_colour) by name when unpickling a task.
        worker = subprocess.Popen(
            [sys.executable, "-c", "import extract_fixtures, sys; from distributed.cli.dask_worker "
             "import main; sys.argv[0] = 'dask-worker'; main()", "--scheduler-file", str(path),
             "--nthreads", "1", "--no-dashboard"],
            env=env, cwd=tmp_path / "worker", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield f"file:{path}"
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


@pytest.mark.slow
def test_relative_paths_reach_a_worker_in_another_directory(tmp_path, monkeypatch, worker_elsewhere):
    from pipeline.features.config import ExtractConfig
    from stages.extract import run_extract

    client = tmp_path / "client"
    client.mkdir()
    monkeypatch.chdir(client)
    manifests = make_dataset(Path("data"), n_clips=3, n_frames=8)  # relative media paths too
    assert not Path(manifests).is_absolute()
    torch.save({"scale": 2.0}, "w.pt")
    config = ExtractConfig(extractors=["test_mean_colour"], weights={"test_mean_colour": "w.pt"},
                           batch_size=4, scheduler=worker_elsewhere, shard_frames=8)
    result = run_extract(config, manifests, "f.zarr")
    assert result.clips_done == 3 and not result.skipped
    assert not (tmp_path / "worker" / "f.zarr").exists()  # nothing went into the worker's directory
    got = store_arrays(client / "f.zarr")
    assert len(got) == 6  # test_mean_colour and valid for each clip
    # The same bytes as an in-process run: the worker read the same frames and the same weights.
    import dataclasses

    reference = run_extract(dataclasses.replace(config, scheduler="inprocess"), manifests,
                            tmp_path / "ref.zarr")
    assert reference.clips_done == 3
    expected = store_arrays(tmp_path / "ref.zarr")
    assert got.keys() == expected.keys()
    for key in got:
        np.testing.assert_array_equal(got[key], expected[key])


def test_client_refuses_a_store_without_what_workers_reported(tmp_path):
    from pipeline.features.runner import ClipOutcome
    from pipeline.features.store import FeatureStore
    from stages.extract import _check_written

    FeatureStore(tmp_path / "f.zarr", "a")  # an empty store: the workers wrote another one
    outcomes = [ClipOutcome("clip00", "done", 8, 8, ["test_mean_colour", "valid"])]
    with pytest.raises(PipelineError, match=r"f.zarr: workers reported 2 array\(s\) written but "
                                            r"this store lacks 2 \(e.g. clip00/test_mean_colour\)"):
        _check_written(tmp_path / "f.zarr", outcomes)
    _check_written(tmp_path / "f.zarr", [ClipOutcome("clip00", "skipped", 8)])  # nothing reported
