"""Cluster readiness: SLURM and scheduler-file specs, pool workers that die with their parent,
and SIGTERM stopping ``extract --scheduler processes:N`` cleanly so that a rerun resumes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.errors import PipelineError
from pipeline.parallel import Scheduler, open_executor, parse_scheduler, slurm_cluster

ROOT = Path(__file__).resolve().parents[1]
STAGES_TESTS = ROOT / "tests" / "stages"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_dead(pids: list[int], timeout: float = 15.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if _alive(p)]


@pytest.mark.parametrize("spec, expected", [
    ("slurm:4", Scheduler("slurm", 4)),
    ("slurm:2,cores=8,memory=32GB,walltime=02:00:00,queue=gpu",
     Scheduler("slurm", 2, options=(("cores", 8), ("memory", "32GB"), ("walltime", "02:00:00"),
                                    ("queue", "gpu")))),
    ("file:/shared/scheduler.json", Scheduler("file", address="/shared/scheduler.json")),
])
def test_parse_cluster_schedulers(spec, expected):
    assert parse_scheduler(spec) == expected
    assert str(expected) == spec


@pytest.mark.parametrize("spec, message", [
    ("slurm:2,gpus=1", "unknown SLURM option 'gpus'"),
    ("slurm:2,cores=many", "cores must be an integer"),
    ("local:2,cores=8", "expected"),
    ("file:", "expected"),
])
def test_bad_cluster_specs_say_why(spec, message):
    with pytest.raises(PipelineError, match=message):
        parse_scheduler(spec)


def test_slurm_job_script_carries_the_spec(tmp_path):
    """dask-jobqueue builds the job script without SLURM installed: nothing is submitted."""
    scheduler = parse_scheduler(f"slurm:2,cores=8,memory=32GB,walltime=02:00:00,queue=gpu,"
                                f"log_directory={tmp_path}")
    with slurm_cluster(scheduler, scheduler_options={"host": "127.0.0.1",
                                                     "dashboard_address": None}) as cluster:
        script = cluster.job_script()
    assert "#SBATCH -p gpu" in script and "#SBATCH -t 02:00:00" in script
    assert "#SBATCH --cpus-per-task=8" in script and "#SBATCH --mem=30G" in script
    assert "--nthreads 8" in script and "--nworkers" not in script  # one process per job


def test_missing_scheduler_file_is_one_line(tmp_path):
    with pytest.raises(PipelineError, match="no such scheduler file"):
        with open_executor(f"file:{tmp_path / 'nope.json'}"):
            pass


@pytest.mark.slow
def test_scheduler_file_joins_a_running_scheduler(tmp_path):
    """``dask scheduler --scheduler-file`` (as in an sbatch script) + one worker, joined by file."""
    path = tmp_path / "scheduler.json"
    dask = [sys.executable, "-m", "distributed.cli"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    scheduler = subprocess.Popen([*dask[:2], "distributed.cli.dask_scheduler", "--scheduler-file",
                                  str(path), "--host", "127.0.0.1", "--dashboard-address", ":0"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not path.exists():
            assert time.monotonic() < deadline and scheduler.poll() is None, "no scheduler file"
            time.sleep(0.2)
        worker = subprocess.Popen([*dask[:2], "distributed.cli.dask_worker", "--scheduler-file",
                                   str(path), "--nthreads", "1", "--no-dashboard"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open_executor(f"file:{path}") as workers:
            assert workers.workers == 1 and not workers.in_process
            assert workers.executor.submit(sum, [1, 2, 3]).result(timeout=60) == 6
    finally:
        for process in (worker, scheduler):
            if process is not None:
                process.terminate()
                process.wait(timeout=30)


POOL_CHILD = """
import json, os, sys, time
from pipeline.parallel import open_executor
with open_executor("processes:2") as workers:
    pids = sorted({workers.executor.submit(os.getpid).result() for _ in range(8)})
    for _ in range(2):
        workers.executor.submit(time.sleep, 120)
    print(json.dumps(pids), flush=True)
    time.sleep(120)
"""


@pytest.mark.slow
def test_pool_workers_die_with_a_killed_parent():
    child = subprocess.Popen([sys.executable, "-c", POOL_CHILD], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        pids = json.loads(child.stdout.readline())
        assert pids and all(_alive(p) for p in pids)
        child.send_signal(signal.SIGKILL)  # no cleanup at all: only the kernel can stop them
        child.wait(timeout=30)
        assert _wait_dead(pids) == []
    finally:
        child.kill()
        child.wait()


EXTRACT_CHILD = """
import sys
sys.path.insert(0, sys.argv[1])
import extract_fixtures  # registers test_mean_colour (spawned workers import it by name)
from cli.main import main
raise SystemExit(main(sys.argv[2:]))
"""


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for t in Path(f"/proc/{pid}/task").iterdir()
                for p in (t / "children").read_text().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_sigterm_stops_a_process_pool_extraction_and_a_rerun_resumes(tmp_path):
    sys.path.insert(0, str(STAGES_TESTS))
    from extract_fixtures import make_dataset
    from pipeline.features.store import FeatureStore
    from pipeline.features.store_inspect import verify

    manifests = make_dataset(tmp_path, n_clips=6, n_frames=16)
    store = tmp_path / "f.zarr"
    args = ["extract", "--manifests", str(manifests), "--store", str(store), "-e", "test_mean_colour",
            "--scheduler", "processes:2", "--batch-size", "4", "--set", "shard_frames=16"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FER_TEST_DELAY": "1.0", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", EXTRACT_CHILD, str(STAGES_TESTS), *args],
                             env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while len(workers) < 2:  # the pool's two workers (plus its resource tracker, maybe)
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            workers = [p for p in _children(child.pid) if "spawn_main" in
                       Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
            time.sleep(0.2)
        time.sleep(2.0)  # mid-shard
        child.send_signal(signal.SIGTERM)
        code = child.wait(timeout=60)
        stderr = child.stderr.read()
    finally:
        child.kill()
        child.wait()
    assert code == 143, stderr
    assert "terminated (SIGTERM): rerun the same command to resume" in stderr
    assert _wait_dead(workers) == []
    env.pop("FER_TEST_DELAY")
    rerun = subprocess.run([sys.executable, "-c", EXTRACT_CHILD, str(STAGES_TESTS), *args],
                           env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert list(verify(FeatureStore(store))) == []
    assert len(FeatureStore(store).clip_ids()) == 6


@pytest.mark.slow
def test_ctrl_c_says_interrupted_and_how_to_resume(tmp_path):
    sys.path.insert(0, str(STAGES_TESTS))
    from extract_fixtures import make_dataset

    manifests = make_dataset(tmp_path, n_clips=3, n_frames=16)
    args = ["extract", "--manifests", str(manifests), "--store", str(tmp_path / "f.zarr"),
            "-e", "test_mean_colour", "--batch-size", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FER_TEST_DELAY": "1.0", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", EXTRACT_CHILD, str(STAGES_TESTS), *args],
                             env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "f.zarr" / "clips").exists():
            assert child.poll() is None and time.monotonic() < deadline, child.stderr.read()
            time.sleep(0.2)
        time.sleep(1.0)
        child.send_signal(signal.SIGINT)
        code = child.wait(timeout=60)
        stderr = child.stderr.read()
    finally:
        child.kill()
        child.wait()
    assert code == 130 and "interrupted: rerun the same command to resume" in stderr, stderr
