"""A weights folder is published whole (record and weights, or neither), follows the umask, and
its bad weights or mismatched record are one line naming the file (issue 37's trials)."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.compat import ensure_torchvision

ensure_torchvision()

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.extractors import create  # noqa: E402
from pipeline.features.extractors.timm_image import TimmImageConfig  # noqa: E402
from pipeline.features.weights_record import (  # noqa: E402
    RECORD_NAME,
    WEIGHTS_NAME,
    read_record,
    sha256_file,
    write_weights_folder,
)
from tests.features.test_timm_image import reference_model  # noqa: E402
from tests.features.test_weights_record import record  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TIMM = TimmImageConfig(model="test_resnet")


@pytest.fixture(scope="module")
def state():
    return reference_model("test_resnet", seed=3).state_dict()


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_weights_folder_follows_the_umask(state, tmp_path, umask):
    previous = os.umask(umask)
    try:
        folder = write_weights_folder(tmp_path / "ft", state, record("timm", "test_resnet", {}))
    finally:
        os.umask(previous)
    assert _mode(folder) == 0o777 & ~umask
    for name in (WEIGHTS_NAME, RECORD_NAME):
        assert _mode(folder / name) == 0o666 & ~umask, name


_KILLED_WRITER = """
import json, os, sys
sys.path[:0] = [{root!r}]
import torch
from pipeline.features import weights_record

def killed(path, *args, **kwargs):  # SIGKILL-like: no cleanup, right before the record
    os._exit(9)

weights_record.io.write_json = killed
record = weights_record.WeightsRecord(**json.loads({record!r}))
weights_record.write_weights_folder({folder!r}, {{"w": torch.ones(3)}}, record)
"""


def _killed_between_weights_and_record(folder: Path) -> None:
    text = json.dumps(record("timm", "test_resnet", {}).to_json())
    code = _KILLED_WRITER.format(root=str(ROOT), folder=str(folder), record=text)
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 9, done.stderr


def test_a_kill_before_the_record_leaves_no_weights_without_record(state, tmp_path):
    # A new folder: nothing appears.
    new = tmp_path / "new"
    _killed_between_weights_and_record(new)
    assert not new.exists()
    # An existing complete folder: it stays whole (its record still vouches for its weights).
    old = write_weights_folder(tmp_path / "old", state, record("timm", "test_resnet", {}))
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    _killed_between_weights_and_record(old)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert read_record(old) is not None
    # The killed writer's staging folder is removed by the next write.
    assert any(p.name.startswith(".old.staging-") for p in tmp_path.iterdir())
    write_weights_folder(old, state, record("timm", "test_resnet", {}))
    assert not any(p.name.startswith((".old.staging-", ".old.old-")) for p in tmp_path.iterdir())


def test_extract_refuses_a_fine_tunes_folder_without_its_record(state, tmp_path):
    # What an older version's kill left: OUT/model.safetensors, no record, OUT.train/ beside it.
    folder = write_weights_folder(tmp_path / "ft", state, record("timm", "test_resnet", {}))
    (folder / RECORD_NAME).unlink()
    (tmp_path / "ft.train").mkdir()
    with pytest.raises(PipelineError, match=r"without their finetune\.json .* unfinished fine-tune") as e:
        create("timm", config=TIMM, weights=folder)
    assert str(folder) in str(e.value) and "\n" not in str(e.value)
    # A plain HF-layout folder (no fine-tune beside it) still loads as before.
    (tmp_path / "ft.train").rmdir()
    assert create("timm", config=TIMM, weights=folder).weights_record is None


def test_a_folder_that_is_not_a_weights_folder_is_never_replaced(state, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(PipelineError, match="not a weights folder's files"):
        write_weights_folder(mine, state, record("timm", "test_resnet", {}))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


def test_truncated_weights_with_a_matching_hash_are_one_line_naming_the_file(state, tmp_path):
    folder = write_weights_folder(tmp_path / "ft", state, record("timm", "test_resnet", {}))
    weights = folder / WEIGHTS_NAME
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    data = json.loads((folder / RECORD_NAME).read_text())
    data["weights_sha256"] = sha256_file(weights)  # the record updated to match
    (folder / RECORD_NAME).write_text(json.dumps(data))
    ext = create("timm", config=TIMM, weights=folder)
    with pytest.raises(PipelineError) as e:
        ext.load()
    message = str(e.value)
    assert message.startswith(str(weights)) and "truncated or damaged" in message
    assert "\n" not in message


def test_family_mismatch_names_both_sides_and_the_right_fix(state, tmp_path):
    # A tdnn record beside timm weights, loaded by the timm extractor already set to test_resnet.
    tdnn = record("tdnn", "test_resnet", {"frontend": {}, "mean_norm": "sliding",
                                          "cmn_seconds": 3.0})
    folder = write_weights_folder(tmp_path / "ft", state, tdnn)
    with pytest.raises(PipelineError) as e:
        create("timm", config=TIMM, weights=folder)
    message = str(e.value)
    assert "records tdnn weights of model 'test_resnet'" in message
    assert "asked for timm model 'test_resnet'" in message
    assert "extract -e tdnn" in message and "set the model" not in message
    # Same family, another model: the fix is the recorded model.
    timm_folder = write_weights_folder(tmp_path / "t", state, record("timm", "test_resnet", {}))
    with pytest.raises(PipelineError, match="asked for timm model 'test_vit'; set the model to "
                                            "'test_resnet'"):
        create("timm", config=TimmImageConfig(model="test_vit"), weights=timm_folder)
