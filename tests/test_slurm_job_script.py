"""``slurm:...,gres=gpu:1`` requests GPUs, and ``extract --print-job-script`` prints the batch
script dask-jobqueue would submit, submitting nothing (dask-jobqueue builds it without SLURM),
needing neither manifests nor a store, and writing nothing."""

import os
import re

import dask.config
import pytest

from cli.main import main
from pipeline.errors import PipelineError
from pipeline.parallel import Scheduler, parse_scheduler, slurm_job_script


def test_gres_is_a_slurm_option():
    assert parse_scheduler("slurm:2,cores=4,gres=gpu:a100:2") == \
        Scheduler("slurm", 2, options=(("cores", 4), ("gres", "gpu:a100:2")))


def test_the_job_script_requests_the_gres_after_the_site_directives(tmp_path):
    spec = f"slurm:2,cores=4,memory=8GB,walltime=01:00:00,gres=gpu:1,log_directory={tmp_path}"
    pytest.importorskip("dask_jobqueue")  # its defaults loaded first: set() restores to them
    with dask.config.set({"jobqueue.slurm.job-extra-directives": ["--constraint=a100"]}):
        script = slurm_job_script(spec)
    lines = script.splitlines()
    assert "#SBATCH --gres=gpu:1" in lines and "#SBATCH --constraint=a100" in lines
    assert lines.index("#SBATCH --constraint=a100") < lines.index("#SBATCH --gres=gpu:1")
    assert "#SBATCH --cpus-per-task=4" in lines and "#SBATCH -t 01:00:00" in lines


def test_print_job_script_prints_it_and_does_nothing_else(tmp_path, capsys):
    store = tmp_path / "f.zarr"
    assert main(["extract", "--manifests", str(tmp_path / "nowhere"), "--store", str(store),
                 "--scheduler", f"slurm:3,cores=2,memory=4GB,gres=gpu:1,log_directory={tmp_path}",
                 "--print-job-script"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("#!/usr/bin/env bash") and "#SBATCH --gres=gpu:1" in out
    assert "dask_worker" in out or "dask-worker" in out
    assert not store.exists()  # no extraction, no store, no manifests read


def test_print_job_script_needs_a_slurm_scheduler(tmp_path, capsys):
    assert main(["extract", "--manifests", str(tmp_path), "--store", str(tmp_path / "s"),
                 "--print-job-script"]) == 1
    assert "--print-job-script needs --scheduler slurm:" in capsys.readouterr().err
    with pytest.raises(PipelineError, match="only a slurm: scheduler has a job script"):
        slurm_job_script("local:2")


def test_the_script_is_dask_jobqueues_own_but_for_the_address_and_name(tmp_path):
    """The reference: SLURMCluster's own job_script() (it starts a scheduler on this host)."""
    dask_jobqueue = pytest.importorskip("dask_jobqueue")
    spec = f"slurm:2,cores=4,memory=8GB,walltime=01:00:00,gres=gpu:1,log_directory={tmp_path}"
    with dask_jobqueue.SLURMCluster(cores=4, memory="8GB", walltime="01:00:00", processes=1,
                                    log_directory=str(tmp_path), job_extra_directives=["--gres=gpu:1"],
                                    scheduler_options={"dashboard_address": None}) as cluster:
        reference = cluster.job_script()
    address = re.search(r"dask_worker (\S+) --name dummy-name", reference)[1]
    assert slurm_job_script(spec) == reference.replace(address, "<SCHEDULER_ADDRESS>").replace(
        "dummy-name", "<WORKER_NAME>")


def test_print_job_script_needs_no_manifests_nor_store_and_writes_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logs = tmp_path / "logs" / "not-yet"
    assert main(["extract", "--scheduler", f"slurm:3,cores=2,memory=4GB,log_directory={logs}",
                 "--print-job-script"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "#!/usr/bin/env bash" and "#SBATCH --cpus-per-task=2" in lines
    # sbatch reads #SBATCH lines up to the first command: the notes are comments before them.
    first_command = next(i for i, line in enumerate(lines[1:], 1)
                         if line.strip() and not line.startswith("#"))
    assert all(line.startswith("#") or not line.strip() for line in lines[1:first_command])
    assert lines.index("#SBATCH --cpus-per-task=2") < first_command
    assert "submits this script 3 time(s)" in out
    assert " <SCHEDULER_ADDRESS> --name <WORKER_NAME> " in lines[first_command]
    assert "<MANIFESTS>" in out and "<STORE>" in out
    assert f"#SBATCH -e {logs}/dask-worker-%J.err" in lines
    assert os.listdir(tmp_path) == []  # not even the log directory dask-jobqueue would make

    store, manifests = tmp_path / "f.zarr", tmp_path / "manifests"
    assert main(["extract", "--manifests", str(manifests), "--store", str(store), "--set",
                 "scheduler=slurm:1,cores=1,memory=1GB", "--print-job-script"]) == 0
    out = capsys.readouterr().out
    assert f"manifests in {manifests}" in out and f"the store {store}" in out
    assert "submits this script 1 time(s)" in out  # the scheduler taken from --set
    assert os.listdir(tmp_path) == []


def test_extract_without_print_job_script_still_needs_manifests_and_store(tmp_path, capsys):
    assert main(["extract", "--store", str(tmp_path / "s")]) == 1
    assert "extract needs --manifests (only --print-job-script runs without them)" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("spec,example", [("slurm:1", "slurm:1,cores=8,memory=24GB"),
                                          ("slurm:2,cores=4", "slurm:2,cores=4,memory=24GB")])
def test_a_slurm_spec_without_cores_or_memory_names_the_option_syntax(spec, example):
    pytest.importorskip("dask_jobqueue")
    from pipeline.parallel import slurm_cluster

    with dask.config.set({"jobqueue.slurm.cores": None, "jobqueue.slurm.memory": None}):
        for build in (lambda: slurm_job_script(spec), lambda: slurm_cluster(parse_scheduler(spec))):
            with pytest.raises(PipelineError) as e:
                build()
            message = str(e.value)
            assert f"--scheduler {example}" in message and "\n" not in message
            assert "SLURMCluster" not in message and "cluster =" not in message
