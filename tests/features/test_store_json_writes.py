"""The feature store replaces its ``zarr.json`` files with :func:`pipeline.io.write_json` (the
one atomic-write toolkit): under a hidden name of each writer's own (several processes may
replace one file at once), a failed write leaves the old file and no temporary file, and a full
disk is the one-line error every other write gives."""

import errno
import json
import os
import threading
from pathlib import Path

import pytest

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.features import atomic


def _node(tmp_path: Path) -> Path:
    node = tmp_path / "clip"
    node.mkdir()
    (node / "zarr.json").write_text(json.dumps({"attributes": {"old": 1}}))
    return node


def test_a_full_disk_while_updating_a_node_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    node = _node(tmp_path)
    real = Path.write_text

    def full(self, *args, **kwargs):
        if self.name.startswith(io.TMP_PREFIX):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(PipelineError, match=r"no space left on .*clip \(writing zarr.json\)"):
        atomic.update_attributes(node, {"new": 2})
    assert json.loads((node / "zarr.json").read_text()) == {"attributes": {"old": 1}}
    assert os.listdir(node) == ["zarr.json"]


def test_concurrent_writers_use_names_of_their_own(tmp_path, monkeypatch):
    node = _node(tmp_path)
    names: list[str] = []
    real = os.replace

    def record(src, dst):
        names.append(Path(src).name)
        return real(src, dst)

    monkeypatch.setattr(os, "replace", record)
    threads = [threading.Thread(target=atomic.update_attributes, args=(node, {f"k{i}": i}))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(names) == len(set(names)) == 4
    assert all(n.startswith(f"{io.TMP_PREFIX}zarr.json{io.writer_tag()}") for n in names)
    assert os.listdir(node) == ["zarr.json"]
