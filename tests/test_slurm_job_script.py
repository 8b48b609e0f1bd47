"""``slurm:...,gres=gpu:1`` requests GPUs, and ``extract --print-job-script`` prints the batch
script dask-jobqueue would submit, submitting nothing (dask-jobqueue builds it without SLURM)."""

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
