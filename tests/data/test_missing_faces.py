"""``demo-data --missing-faces``: a fixed share of every clip's face crops is missing, and
nothing else of the demo changes (the default stays byte for byte as it was)."""

import json

import pytest
from typer.testing import CliRunner

from pipeline.data.synthetic import MARKER, DemoConfig, generate
from pipeline.errors import PipelineError

from .test_synthetic import SMALL, _hashes, small  # noqa: F401 (the module's demo fixture)


def test_default_marker_has_no_new_key(small):  # noqa: F811
    out, _ = small
    assert "missing_faces" not in json.loads((out / MARKER).read_text())["config"]


def test_a_fixed_share_of_every_clip_misses_its_face(small, tmp_path):  # noqa: F811
    out, _ = small
    config = DemoConfig(clips=SMALL.clips, frames=SMALL.frames, seed=SMALL.seed, size=SMALL.size,
                        missing_faces=0.3)
    generate(tmp_path / "faces", config)
    crops = tmp_path / "faces" / "cropped_aligned"
    clips = sorted(p for p in crops.iterdir() if p.is_dir())
    assert clips
    for clip in clips:
        assert SMALL.frames - len(list(clip.glob("*.jpg"))) == round(0.3 * SMALL.frames), clip
    mine, theirs = _hashes(out), _hashes(tmp_path / "faces")
    changed = {n for n in set(mine) | set(theirs) if mine.get(n) != theirs.get(n)}
    assert changed and all(n.startswith("cropped_aligned") or n == MARKER for n in changed)
    assert json.loads((tmp_path / "faces" / MARKER).read_text())["config"]["missing_faces"] == 0.3


def test_bad_share_is_refused():
    with pytest.raises(PipelineError, match="--missing-faces 0.95"):
        DemoConfig(missing_faces=0.95)


def test_cli_option(tmp_path):
    from cli.main import app

    result = CliRunner().invoke(app, ["demo-data", str(tmp_path / "d"), "--clips", "4",
                                      "--frames", "20", "--size", "32", "--missing-faces", "0.5"])
    assert result.exit_code == 0, result.output
    crops = [p for p in (tmp_path / "d" / "cropped_aligned").iterdir() if p.is_dir()]
    assert crops and all(len(list(p.glob("*.jpg"))) == 10 for p in crops)
