"""Per-video-frame log-mel windows (centring, edge padding) and the audio-stride fill rule."""

import numpy as np
import pytest

from pipeline.features.audio_windows import (
    fill_strided,
    frame_windows,
    strided_indices,
    window_length,
)

FLOOR = -80.0  # the clip's minimum: what windows are padded with


def ramp_mel(t_mel: int) -> np.ndarray:
    """Column 0 holds each row's own index; column 1 is flat except one cell at the clip's floor."""
    mel = np.stack([np.arange(t_mel, dtype=np.float32), np.full(t_mel, 5.0, np.float32)], axis=1)
    mel[t_mel // 2, 1] = FLOOR
    return mel


@pytest.mark.parametrize(
    "fps, mel_rate, window_frames",
    [(25.0, 100.0, 4), (30.0, 15.625, 32), (29.97, 200.0, 48), (30.0, 15.625, 64), (25.0, 100.0, 5)],
)
def test_windows_are_centred_on_each_video_frame(fps, mel_rate, window_frames):
    n_frames = 60
    t_mel = int(n_frames / fps * mel_rate) + 1
    mel = ramp_mel(t_mel)
    windows = frame_windows(mel, mel_rate, n_frames, fps, window_frames, np.arange(n_frames))
    t_win = round(window_frames / fps * mel_rate)
    assert windows.shape == (n_frames, t_win, 2) and windows.dtype == np.float32
    for i, window in enumerate(windows):
        inside = window[:, 0] >= 0  # ramp rows; padding is FLOOR in both columns
        first = np.flatnonzero(inside)[0]
        rows = window[first, 0] - first + np.arange(t_win)  # log-mel frame each row stands for
        np.testing.assert_array_equal(inside, (rows >= 0) & (rows < t_mel))
        np.testing.assert_array_equal(window[inside, 0], rows[inside])
        np.testing.assert_array_equal(window[~inside], FLOOR)
        # The window's frame centres average to the video frame's centre, within half a frame.
        assert abs(rows.mean() / mel_rate - (i + 0.5) / fps) <= 0.5 / mel_rate + 1e-9


def test_edges_are_padded_with_the_clip_minimum():
    fps, mel_rate, window_frames, n_frames = 25.0, 100.0, 8, 10
    mel = ramp_mel(40)
    windows = frame_windows(mel, mel_rate, n_frames, fps, window_frames)
    t_win = window_length(window_frames, fps, mel_rate)
    assert t_win == 32
    # Frame 0 is centred at 2 log-mel frames in: start = floor(2 - 15.5 + 0.5) = -13.
    np.testing.assert_array_equal(windows[0, :13], FLOOR)
    np.testing.assert_array_equal(windows[0, 13:, 0], np.arange(t_win - 13))
    # Frame 9 is centred at 38: its window is frames 23..54, past the last log-mel frame (39).
    last = windows[-1]
    start = 23
    np.testing.assert_array_equal(last[: 40 - start, 0], np.arange(start, 40))
    np.testing.assert_array_equal(last[40 - start:], FLOOR)


def test_edge_padding_repeats_the_first_and_last_rows():
    fps, mel_rate, window_frames, n_frames = 25.0, 100.0, 8, 10
    mel = ramp_mel(40)
    windows = frame_windows(mel, mel_rate, n_frames, fps, window_frames, pad="edge")
    np.testing.assert_array_equal(windows[0, :13], np.repeat(mel[:1], 13, axis=0))
    np.testing.assert_array_equal(windows[0, 13:, 0], np.arange(32 - 13))
    np.testing.assert_array_equal(windows[-1, 40 - 23:], np.repeat(mel[-1:], 32 - 17, axis=0))


def test_subset_of_frames_equals_the_full_computation():
    mel = ramp_mel(300)
    full = frame_windows(mel, 100.0, 70, 25.0, 32)
    picked = np.array([0, 5, 33, 69])
    np.testing.assert_array_equal(frame_windows(mel, 100.0, 70, 25.0, 32, picked), full[picked])


def test_audio_shorter_than_a_window_still_gives_full_windows():
    mel = ramp_mel(3)
    windows = frame_windows(mel, 15.625, 4, 30.0, 64)
    assert windows.shape == (4, 33, 2)
    assert (windows == FLOOR).sum() >= 4 * 30 * 2


@pytest.mark.parametrize(
    "n_frames, stride, expected",
    [(10, 3, [0, 3, 6, 9]), (11, 3, [0, 3, 6, 9, 10]), (1, 5, [0]), (4, 1, [0, 1, 2, 3]),
     (5, 10, [0, 4])],
)
def test_strided_indices_include_the_last_frame(n_frames, stride, expected):
    assert strided_indices(n_frames, stride).tolist() == expected


@pytest.mark.parametrize("n_frames, stride", [(11, 3), (10, 3), (7, 1), (5, 10), (1, 4)])
def test_fill_is_exact_at_computed_frames_and_linear_between(n_frames, stride):
    rng = np.random.default_rng(0)
    indices = strided_indices(n_frames, stride)
    values = rng.normal(size=(len(indices), 2, 3)).astype(np.float32)
    filled = fill_strided(values, indices, n_frames)
    assert filled.shape == (n_frames, 2, 3) and filled.dtype == np.float32
    np.testing.assert_array_equal(filled[indices], values)
    # Linear interpolation reproduces any function linear in the frame index.
    slope, offset = rng.normal(size=(2, 4)).astype(np.float32)
    linear = indices[:, None] * slope + offset
    np.testing.assert_allclose(
        fill_strided(linear, indices, n_frames), np.arange(n_frames)[:, None] * slope + offset,
        rtol=1e-5, atol=1e-5)


def test_fill_between_two_frames_is_the_weighted_mean():
    filled = fill_strided(np.array([[0.0], [4.0]]), np.array([0, 4]), 5)
    np.testing.assert_array_equal(filled[:, 0], [0.0, 1.0, 2.0, 3.0, 4.0])
