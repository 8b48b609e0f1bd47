"""Stage three reads an expression-val clip the leakage guard excluded as unlabelled (paper 003,
section 4.1): its frames are predicted and written, never scored."""

import numpy as np

from pipeline.data.manifest import Clip
from pipeline.scoring.frames import Member, load_split
from pipeline.runs.predictions import (
    FaceMaskWriter,
    PredictionWriter,
    face_mask_path,
    prediction_path,
)


def test_excluded_clip_reads_as_unlabelled(tmp_path):
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    labels = {"a": rng.integers(0, 8, 20).astype(np.int8),
              "b": rng.integers(0, 8, 30).astype(np.int8)}
    with PredictionWriter(prediction_path(run, "val", "main")) as probs, \
            FaceMaskWriter(face_mask_path(run, "val")) as faces:
        for clip_id, y in labels.items():
            probs.add(clip_id, rng.dirichlet(np.ones(8), y.size).astype(np.float32))
            faces.add(clip_id, np.ones(y.size, bool))
    clips = [Clip("a", "val", "a", 20, 25.0, None, None, None, labels["a"]),
             Clip("b", "val", "b", 30, 25.0, None, None, None, labels["b"], None, None,
                  ("expr_val",))]
    data = load_split([Member(run, "main")], clips, "val")
    np.testing.assert_array_equal(data.labels[:20], labels["a"])
    assert (data.labels[20:] == -1).all() and data.probs.shape == (1, 50, 8)
