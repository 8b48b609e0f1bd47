"""``demo-data --face-cue geometry``: the class pair shows in the mouth's shape only, not in any
colour (a random network's features cannot read it); the default demo keeps its bytes."""

import json

import numpy as np
import pytest

from pipeline.data.synthetic import DemoConfig, generate
from pipeline.data.synthetic_media import face, geometry_face, identity
from pipeline.errors import PipelineError


def _draw(kind, n=240, size=64):
    rng = np.random.default_rng(0)
    who = identity(rng)
    pairs = np.arange(n) % 4
    if kind == "geometry":
        return pairs, np.stack([geometry_face(rng, int(p), size) for p in pairs])
    return pairs, np.stack([face(rng, int(p), who, size) for p in pairs])


def _colour_separation(pairs, crops):
    """Between-pair spread of the mean colour over its within-pair spread (a colour cue: >> 1)."""
    mean = crops.reshape(len(crops), -1, 3).mean(axis=1)
    centres = np.stack([mean[pairs == p].mean(axis=0) for p in range(4)])
    within = np.mean([mean[pairs == p].std(axis=0) for p in range(4)], axis=0)
    return float((centres.std(axis=0) / within).max())


def test_geometry_faces_show_no_colour_cue_the_colour_ones_do():
    assert _colour_separation(*_draw("colour")) > 1.0
    assert _colour_separation(*_draw("geometry")) < 0.5


def test_geometry_mouths_differ_by_pair():
    pairs, crops = _draw("geometry", n=8, size=64)
    # same generator state, another pair: only the mouth's pixels change
    a = geometry_face(np.random.default_rng(5), 0, 64).astype(int)
    b = geometry_face(np.random.default_rng(5), 2, 64).astype(int)
    rows = np.flatnonzero(np.abs(a - b).sum(axis=(1, 2)))
    assert len(rows) and rows.min() >= 28 and rows.max() - rows.min() < 16  # the mouth only


def test_geometry_demo_and_the_default_marker(tmp_path):
    config = dict(clips=5, frames=30, seed=0, size=32)
    generate(tmp_path / "c", DemoConfig(**config))
    generate(tmp_path / "g", DemoConfig(**config, face_cue="geometry"))
    assert "face_cue" not in json.loads((tmp_path / "c" / "demo.json").read_text())["config"]
    assert json.loads((tmp_path / "g" / "demo.json").read_text())["config"]["face_cue"] == "geometry"
    c = sorted((tmp_path / "c" / "cropped_aligned").rglob("*.jpg"))
    g = sorted((tmp_path / "g" / "cropped_aligned").rglob("*.jpg"))
    assert c[0].read_bytes() != g[0].read_bytes()
    with pytest.raises(PipelineError, match="--face-cue"):
        DemoConfig(face_cue="hue")
