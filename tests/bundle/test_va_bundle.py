"""VA in a bundle: the weights and smoothing windows of scores.json's va section are recorded
for the bundle's VA heads and applied by predict as the ensemble's VA submission applies them;
bundles without them (older ones, single runs) average the heads equally; bad records are
refused in one line."""

import numpy as np
import pytest

from pipeline.bundle.format import BundleError
from pipeline.bundle.va import check_va_decisions, combine_va, va_decisions
from pipeline.scoring.va_ensemble import weighted
from pipeline.scoring.va_smoothing import smooth_va

HEADS = ["seq/va", "image/va"]
SCORES = {"va": {"weights": {"image/va": {"valence": 0.25, "arousal": 0.0},
                             "seq/va": {"valence": 0.75, "arousal": 1.0}},
                 "smoothing": {"valence": 5, "arousal": 1}}}


def test_decisions_follow_the_bundles_head_order():
    record = va_decisions(SCORES, HEADS, None)
    assert record == {"weights": [[0.75, 1.0], [0.25, 0.0]], "smoothing": [5, 1]}
    assert va_decisions({}, HEADS, None) is None  # a single run: no scores.json
    assert va_decisions({"macro_f1": 0.5}, HEADS, None) is None  # an ensemble without VA
    assert va_decisions(SCORES, [], None) is None  # no VA heads in the bundle


def test_combine_is_the_ensembles_weighted_and_smoothed_values():
    rng = np.random.default_rng(0)
    values = np.tanh(rng.normal(size=(2, 30, 2))).astype(np.float32)
    record = va_decisions(SCORES, HEADS, None)
    got = combine_va(values, record)
    expected = smooth_va(weighted(values, np.array(record["weights"])), np.array([0, 30]), (5, 1))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got[:, 1], values[0, :, 1])  # arousal: head 1 alone, unsmoothed
    assert not np.allclose(got[:, 0], values.mean(axis=0)[:, 0])
    np.testing.assert_array_equal(combine_va(values, None),  # old bundles: the equal mean
                                  np.mean(values, axis=0).astype(np.float32))


@pytest.mark.parametrize("scores, message", [
    ({"va": {"weights": {"seq/va": {"valence": 1, "arousal": 1}}}}, "VA heads are"),
    ({"va": {"weights": {h: {"valence": 2, "arousal": 0} for h in HEADS}}}, "in \\[0, 1\\]"),
    ({"va": {"weights": {h: {"valence": 0.5, "arousal": 0.5} for h in HEADS},
             "smoothing": {"valence": 4, "arousal": 1}}}, "two odd windows"),
])
def test_bad_va_sections_are_refused_in_one_line(scores, message, tmp_path):
    with pytest.raises(BundleError, match=message) as error:
        va_decisions(scores, HEADS, tmp_path)
    assert "\n" not in str(error.value) and "scores.json" in str(error.value)
    with pytest.raises(BundleError, match="va_decisions"):
        check_va_decisions({"weights": "x"}, 2, "bundle.json")


def test_a_bundle_with_va_decisions_is_version_2_which_a_version_1_reader_refuses(tmp_path,
                                                                                   monkeypatch):
    """An older predict would ignore ``va_decisions`` and average the VA heads equally: such a
    bundle is written as version 2 so that a version-1 reader refuses it; others stay version 1."""
    from pipeline.bundle import format as F
    assert F.version_for({"va_heads": HEADS}) == 1
    assert F.version_for({"va_heads": HEADS, "va_decisions": va_decisions(SCORES, HEADS, None)}) == 2
    record = {"format": F.FORMAT, "format_version": 2}
    F.check_version(tmp_path, record)  # this reader
    monkeypatch.setattr(F, "READABLE_VERSIONS", (1,))  # a reader from before VA decisions
    with pytest.raises(BundleError, match="bundle format version 2"):
        F.check_version(tmp_path, record)
