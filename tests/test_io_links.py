"""Atomic writes never write through a link planted at their temporary name (issue 37: nothing
is written through a symlink the tool did not make; docs/trust.md)."""

import os

import numpy as np
import pytest

from pipeline import io


@pytest.mark.parametrize("write", ["text", "json", "npz"])
def test_a_link_at_the_temporary_name_is_replaced_not_followed(tmp_path, write):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    run = tmp_path / "run"
    run.mkdir()
    name = {"text": "notes.txt", "json": "metrics.json", "npz": "preds.npz"}[write]
    os.symlink(victim, io.temporary_path(run / name))
    if write == "text":
        io.write_text(run / name, "new")
    elif write == "json":
        io.write_json(run / name, {"a": 1})
    else:
        io.save_npz(run / name, x=np.zeros(3))
    assert victim.read_text() == "precious\n"
    assert not (run / name).is_symlink() and (run / name).stat().st_size > 0
    assert sorted(os.listdir(run)) == [name]
