"""The shared frame-axis primitives: frame names, the face rule, windows and nearest faces per clip."""

import os

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.frames import (
    clip_offsets,
    face_mask,
    frame_name,
    frame_numbers,
    nearest_face,
    window_bounds,
)


def test_face_mask_is_the_existence_of_each_frame_file(tmp_path):
    rng = np.random.default_rng(0)
    present = rng.random(30) > 0.4
    for i in np.flatnonzero(present):
        (tmp_path / frame_name(int(i))).write_bytes(b"")
    for other in ("00001.png", "0002.jpg", "00040.jpg", "notes.txt", "000031.jpg"):
        (tmp_path / other).write_bytes(b"")  # not frames of this 30-frame clip
    expected = [os.path.exists(tmp_path / f"{i + 1:05d}.jpg") for i in range(30)]
    assert face_mask(tmp_path, 30).tolist() == expected
    assert not face_mask(tmp_path / "missing", 5).any() and not face_mask(None, 5).any()
    assert frame_numbers(["00007.jpg", "7.jpg", "00007.jpeg"]) == [7]


@settings(max_examples=50, deadline=None)
@given(lengths=st.lists(st.integers(1, 20), min_size=1, max_size=4),
       length=st.sampled_from([1, 2, 5, 8]), seed=st.integers(0, 1000))
def test_concatenated_clips_behave_like_each_clip_alone(lengths, length, seed):
    offsets = clip_offsets(lengths)
    face = np.random.default_rng(seed).random(int(offsets[-1])) > 0.6
    start, stop = window_bounds(int(offsets[-1]), length, offsets)
    source = nearest_face(face, offsets)
    for c, n in enumerate(lengths):
        part = slice(offsets[c], offsets[c + 1])
        alone = window_bounds(n, length)
        assert np.array_equal(start[part] - offsets[c], alone[0])
        assert np.array_equal(stop[part] - offsets[c], alone[1])
        assert np.array_equal(source[part] - offsets[c], nearest_face(face[part]))
