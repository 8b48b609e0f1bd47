"""Crops of faces at the frame's edge: the pixels outside the frame are the border replicated (the
default) or reflected, never black wedges; crops inside the frame are the same bytes in every mode."""

import numpy as np
import pytest

from pipeline.data.faces.align import align, warp
from pipeline.data.faces.config import FacesConfig
from pipeline.data.faces.synthetic import moving_face


def _rotation(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(angle) * scale, np.sin(angle) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def test_an_edge_crop_replicates_the_border_instead_of_black_corners():
    frame = np.full((120, 160, 3), 200, np.uint8)
    frame[:, :10] = (40, 160, 90)  # a coloured left border
    # a crop reaching 20 px past the left edge, rotated: corners outside the frame
    matrix = _rotation(0.3, 1.0, (30.0, -10.0))
    black = warp(frame, matrix, 64, "black")
    replicated = warp(frame, matrix, 64, "replicate")
    reflected = warp(frame, matrix, 64, "reflect")
    outside = black.sum(-1) == 0
    assert outside.sum() > 100  # the old crop has black wedges
    assert (replicated.sum(-1) > 0).all() and (reflected.sum(-1) > 0).all()
    # beyond the left border the replicated pixels are the border's colour
    np.testing.assert_allclose(replicated[outside].mean(0), (40, 160, 90), atol=25)
    assert FacesConfig().pad == "replicate"
    with pytest.raises(Exception, match="pad 'zeros'"):
        FacesConfig(pad="zeros")


def test_crops_inside_the_frame_are_the_same_bytes_in_every_mode():
    video = moving_face(6)
    landmarks = np.array([[150.0, 110.0], [175.0, 110.0], [162.0, 125.0], [152.0, 140.0],
                          [172.0, 140.0]])
    crops = [align(video.frames[0], landmarks, 112, 1.0, pad)[0] for pad in ("black", "replicate", "reflect")]
    assert crops[0].tobytes() == crops[1].tobytes() == crops[2].tobytes()
    # a face half out of the frame: black corners only in "black"
    edge = landmarks - [140.0, 0.0]
    black, _ = align(video.frames[0], edge, 112, 1.0, "black")
    padded, _ = align(video.frames[0], edge, 112, 1.0, "replicate")
    assert (black.sum(-1) == 0).sum() > 500 and (padded.sum(-1) == 0).sum() == 0
