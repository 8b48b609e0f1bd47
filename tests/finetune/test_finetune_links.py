"""``finetune``'s lock file ``OUT.train/owner.lock`` is never written through a link, and a failed
fine-tune leaves no bare ``OUT.train`` (issue 37)."""

import os

from cli.main import main


def _finetune(manifests, out, *sets):
    args = ["finetune", "--manifests", str(manifests), "--out", str(out)]
    for item in ("epochs=1", "batch_size=8", "model=test_resnet", *sets):
        args += ["--set", item]
    return main(args)


def test_finetune_refuses_a_lock_that_is_a_link(demo_manifests, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (tmp_path / "w.train").mkdir()
    os.symlink(victim, tmp_path / "w.train" / "owner.lock")
    code = _finetune(demo_manifests, tmp_path / "w")
    err = capsys.readouterr().err
    assert code == 1 and err.count("error:") == 1 and "Traceback" not in err
    assert f"{tmp_path / 'w.train' / 'owner.lock'}: a lock file is a symbolic link" in err
    assert victim.read_text() == "precious\n"
    assert not (tmp_path / "w").exists()


def test_a_failed_finetune_leaves_no_bare_work_folder(demo_manifests, tmp_path, capsys):
    code = _finetune(demo_manifests, tmp_path / "w", 'frozen=["stem9"]')  # no such parameter
    assert code == 1 and "stem9" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []
