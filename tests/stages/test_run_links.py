"""A run's lock file is never written through a link, and a failed run leaves no bare run folder
(issue 37): ``fuse`` here, ``finetune`` in tests/finetune/test_finetune_links.py, the lock API in
tests/test_locks.py."""

import os

import pytest

from cli.main import main
from fusion.synthetic import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("links"), splits={"train": 2, "val": 1}, frames=40)


def _fuse(data, out, *args):
    return main(["fuse", "--store", str(data.store), "--manifests", str(data.manifests),
                 "--out", str(out), "--method", "image", "--set", "train.epochs=1", *args])


def test_fuse_refuses_an_owner_lock_that_is_a_link_and_leaves_its_target_alone(data, tmp_path,
                                                                               capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "runs" / "image"
    run.mkdir(parents=True)
    os.symlink(victim, run / "owner.lock")
    code = _fuse(data, tmp_path / "runs")
    err = capsys.readouterr().err
    assert code == 1 and err.count("error:") == 1 and "Traceback" not in err
    assert f"{run / 'owner.lock'}: a lock file is a symbolic link" in err
    assert victim.read_text() == "precious\n"
    assert sorted(os.listdir(run)) == ["owner.lock"] and (run / "owner.lock").is_symlink()


def test_a_failed_fuse_leaves_no_run_folder(data, tmp_path, capsys):
    code = _fuse(data, tmp_path / "runs", "--set", "head.image=iresnet")  # no such array: fails
    assert code == 1 and "iresnet" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    existing = tmp_path / "mine"
    existing.mkdir()  # a folder the user made stays, empty
    assert _fuse(data, existing, "--set", "head.image=iresnet") == 1
    assert os.listdir(existing) == []
