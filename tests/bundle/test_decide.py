"""The per-frame table's bookkeeping: which rule decided each faceless frame, the summary's
class shares and segments."""

import numpy as np
import pytest

from pipeline.bundle.decide import choices_of, faceless_rules, summary
from pipeline.data.manifest import Clip

MEMBERS = ["image/main", "audio/main"]


def _choices(weights, steps, fill="nearest"):
    return choices_of({"combiner": "weighted", "rule": "weighted", "weights": weights,
                       "fill": fill, "smooth": "none", "window": 1, "bias": [0.0] * 8,
                       "fallback_threshold": None, "steps": steps})


@pytest.mark.parametrize("weights, steps, expected", [
    ([1, 1], ["fill"], "nearest_face"),  # the ensemble fills: whatever the members see
    ([1, 1], [], "audio"),  # an audio member with weight decides and nothing fills
    ([1, 0], [], "nearest_face"),  # the audio member has no weight: the face head's own rule
])
def test_each_faceless_frame_names_its_rule(weights, steps, expected):
    face = np.array([True, False, False, True])
    rules = faceless_rules(face, _choices(weights, steps), MEMBERS, ["image/main"])
    assert list(rules) == ["", expected, expected, ""]


def test_a_video_without_any_face_and_one_with_faces_only():
    choices = _choices([1, 1], ["fill"])
    assert set(faceless_rules(np.zeros(3, bool), choices, MEMBERS, ["image/main"])) == {
        "no_face_in_video"}
    assert set(faceless_rules(np.ones(3, bool), choices, MEMBERS, ["image/main"])) == {""}


def test_summary_shares_and_segments():
    clip = Clip("v", "test", "v", 6, 2.0, None, None, None, None)
    labels = np.array([4, 4, 0, 0, 0, 4])
    record = summary(clip, labels, np.array([1, 1, 0, 1, 1, 1], bool))
    assert record["frames_with_face"] == 5
    assert record["shares"]["Happiness"] == pytest.approx(0.5)
    assert record["shares"]["Neutral"] == pytest.approx(0.5)
    assert [(s["expression"], s["first_frame"], s["last_frame"], s["start"], s["end"])
            for s in record["segments"]] == [("Happiness", 1, 2, 0.0, 1.0),
                                             ("Neutral", 3, 5, 1.0, 2.5),
                                             ("Happiness", 6, 6, 2.5, 3.0)]
