"""Five-point alignment (a known similarity transform is recovered; warped points land on the
template) and the tracker (identities through gaps and exits, two people left and right)."""

import numpy as np
import pytest

from pipeline.data.faces.align import ARCFACE_112, align, similarity, template, warp
from pipeline.data.faces.common import Face
from pipeline.data.faces.track import link, people


def _transform(angle, scale, shift):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[scale * c, -scale * s, shift[0]], [scale * s, scale * c, shift[1]]])


def test_similarity_recovers_a_known_transform_and_least_squares_under_noise():
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 200, (5, 2))
    truth = _transform(0.3, 0.7, (12.0, -5.0))
    mapped = points @ truth[:, :2].T + truth[:, 2]
    np.testing.assert_allclose(similarity(points, mapped), truth, atol=1e-9)
    # With noise, the fit's residual is the least-squares one: no other similarity is closer.
    noisy = mapped + rng.normal(0, 2.0, mapped.shape)
    fit = similarity(points, noisy)
    residual = ((points @ fit[:, :2].T + fit[:, 2] - noisy) ** 2).sum()
    for _ in range(200):
        other = _transform(0.3 + rng.normal(0, 0.02), 0.7 * (1 + rng.normal(0, 0.02)),
                           (12.0 + rng.normal(0, 1), -5.0 + rng.normal(0, 1)))
        assert ((points @ other[:, :2].T + other[:, 2] - noisy) ** 2).sum() >= residual - 1e-9
    # a mirrored point set is fitted by a rotation, never a reflection
    assert np.linalg.det(similarity(points, points * [-1, 1])[:, :2]) > 0


def test_template_margin_zooms_out_about_the_centre():
    np.testing.assert_allclose(template(112, 1.0), ARCFACE_112)
    wide = template(112, 1.4)
    np.testing.assert_allclose(wide - 56.0, (ARCFACE_112 - 56.0) / 1.4)
    np.testing.assert_allclose(template(224, 1.0), ARCFACE_112 * 2)
    with pytest.raises(ValueError):
        template(112, 0.0)


def test_aligned_crop_puts_the_landmarks_on_the_template():
    """Dots drawn at five places of a rotated, scaled 'face' are found at the template's places."""
    frame = np.zeros((240, 320, 3), np.uint8)
    truth = _transform(-0.4, 1.9, (100.0, 30.0))  # template -> frame (all inside it)
    landmarks = ARCFACE_112 @ truth[:, :2].T + truth[:, 2]
    yy, xx = np.mgrid[:240, :320]
    for x, y in landmarks:  # pixel centres at +0.5
        frame[(xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 < 4.0 ** 2] = 255
    crop, matrix = align(frame, landmarks, 112, 1.0)
    assert crop.shape == (112, 112, 3)
    weight = crop[..., 1].astype(float)
    cy, cx = np.mgrid[:112, :112] + 0.5
    for x, y in ARCFACE_112:  # each dot's brightness-weighted centre, near where it should be
        near = ((cx - x) ** 2 + (cy - y) ** 2 < 8.0 ** 2) * weight
        assert near.sum() > 255 * 10
        assert abs((near * cx).sum() / near.sum() - x) < 0.5
        assert abs((near * cy).sum() / near.sum() - y) < 0.5
    np.testing.assert_allclose(matrix @ np.r_[landmarks[0], 1.0], ARCFACE_112[0], atol=1e-6)
    # outside the frame is black
    assert warp(frame, np.array([[1.0, 0, -1000], [0, 1.0, 0]]), 16).max() == 0


def _face(x, y, side=40.0, score=0.99):
    return Face(np.array([x, y, x + side, y + side], np.float32), score, np.zeros((5, 2), np.float32))


def test_tracker_follows_one_face_through_a_gap_and_an_exit():
    detections = [[_face(10 + 3 * i, 50)] for i in range(10)]  # moving right
    detections[4] = []  # a missed frame: the same track continues
    detections += [[] for _ in range(5)]  # the face left the picture
    detections += [[_face(200, 60)] for _ in range(6)]  # it came back elsewhere: a new track
    detections[2].append(_face(150, 150, score=0.8))  # a one-frame false detection
    tracks = link(detections, iou_min=0.3, max_gap=2)
    assert sorted(len(t.frames) for t in tracks) == [1, 6, 9]
    (person,) = people(tracks, 1, min_frames=3)
    assert sorted(person) == [i for i in range(10) if i != 4] + list(range(15, 21))
    assert person[2].score == pytest.approx(0.99)  # not the false detection


def test_two_people_are_left_and_right_and_never_mixed():
    detections = [[_face(200, 50), _face(20, 60)] for _ in range(8)]  # right listed first
    detections += [[_face(25, 60)] for _ in range(3)]  # only the left person
    left, right = people(link(detections), 2)
    assert sorted(left) == list(range(11)) and sorted(right) == list(range(8))
    assert all(f.box[0] < 100 for f in left.values()) and all(f.box[0] > 100 for f in right.values())
    # a third track overlapping both in time is someone else: left out
    crowd = [faces + [_face(100, 150)] for faces in detections[:8]]
    left, right = people(link(crowd), 2)
    assert all(f.box[1] < 100 for f in [*left.values(), *right.values()])


def test_a_wider_crop_holds_the_narrower_one_at_its_centre():
    """Multi-scale re-crops from one stored crop: the centre 1/1.4 of a crop at scale 1.4 is the
    crop at scale 1.0 (what ``configs.timm.crops`` fractions take), up to resampling."""
    from pipeline.data.faces.synthetic import moving_face

    video = moving_face(n_frames=1)
    eyes, box = video.eyes[0], video.boxes[0]
    # five points from the known eyes and box: nose between the eyes, mouth near the chin
    mid = eyes.mean(0)
    landmarks = np.array([eyes[0], eyes[1], [mid[0], mid[1] + 0.3 * (box[3] - box[1])],
                          [eyes[0, 0], box[3] - 0.2 * (box[3] - box[1])],
                          [eyes[1, 0], box[3] - 0.2 * (box[3] - box[1])]])
    narrow, _ = align(video.frames[0], landmarks, 112, 1.0)
    wide, _ = align(video.frames[0], landmarks, 160, 1.4)
    side = 160 / 1.4
    start = (160 - side) / 2
    from PIL import Image

    centre = Image.fromarray(wide).resize((112, 112), Image.Resampling.BILINEAR,
                                          box=(start, start, start + side, start + side))
    difference = np.abs(np.asarray(centre, float) - narrow.astype(float))
    assert difference.mean() < 4.0  # grey levels (measured 2.2)
    # ... while the same crop moved by one pixel differs by about 10
    shifted, _ = align(video.frames[0], landmarks + [1.0, 0.0], 112, 1.0)
    assert np.abs(shifted.astype(float) - narrow.astype(float)).mean() > difference.mean() * 3
