"""The executor abstraction: scheduler values, per-worker torch threads, the same results everywhere."""

import os

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.parallel import (
    Scheduler,
    available_cores,
    open_executor,
    parse_scheduler,
    threads_per_worker,
)


@pytest.mark.parametrize("spec, expected", [
    ("inprocess", Scheduler("inprocess")),
    ("processes:3", Scheduler("processes", 3)),
    ("local:2", Scheduler("local", 2)),
    ("tcp://10.0.0.1:8786", Scheduler("dask", address="tcp://10.0.0.1:8786")),
])
def test_parse_scheduler(spec, expected):
    assert parse_scheduler(spec) == expected
    assert str(expected) == spec


@pytest.mark.parametrize("spec", ["", "local", "local:0", "processes:-1", "threads:2", "dask"])
def test_parse_scheduler_rejects_with_the_choices(spec):
    with pytest.raises(PipelineError, match="processes:N"):
        parse_scheduler(spec)


def test_threads_share_the_cores():
    assert threads_per_worker(4, cores=16) == 4
    assert threads_per_worker(3, cores=16) == 5
    assert threads_per_worker(8, cores=2) == 1  # never zero
    assert threads_per_worker(1) == available_cores()


def test_in_process_runs_in_this_process_and_delivers_errors_through_futures():
    with open_executor("inprocess") as workers:
        assert workers.in_process and workers.workers == 1 and workers.threads is None
        assert workers.executor.submit(os.getpid).result() == os.getpid()
        with pytest.raises(ValueError):
            workers.executor.submit(int, "not a number").result()


def _check_pool(spec: str, n: int) -> None:
    with open_executor(spec) as workers:
        assert not workers.in_process and workers.workers == n
        assert workers.threads == max(1, available_cores() // n)
        futures = [workers.executor.submit(pow, k, 2) for k in range(6)]
        assert [f.result() for f in futures] == [k * k for k in range(6)]
        # Every task runs with the worker's share of the cores as torch threads.
        threads = {workers.executor.submit(torch.get_num_threads).result() for _ in range(4)}
        assert threads == {workers.threads}
        assert workers.executor.submit(os.getpid).result() != os.getpid()
        with pytest.raises(ValueError):
            workers.executor.submit(int, "not a number").result()


@pytest.mark.slow
def test_process_pool():
    _check_pool("processes:2", 2)


@pytest.mark.slow
def test_dask_scheduler_address():
    # A scheduler started elsewhere (here a LocalCluster): slots and threads come from its workers.
    # (`local:N` runs in tests/stages/test_extract_parallel.py.)
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        assert cluster.scheduler_address.startswith("tcp://")
        _check_pool(cluster.scheduler_address, 2)
