"""Audio embeddings once per clip (tdnn's per-clip path) against the per-window computation.

The reference is the network on each window alone (``per_clip = false``: the x-vector's own
forward, unpadded convolutions, statistics pooling with ``torch.std``), and Kaldi's sliding CMN
written out from its definition.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses

import numpy as np
import pytest
import torch

from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.audio_windows import frame_windows, strided_indices, window_length, window_starts
from pipeline.features.extractors import create
from pipeline.features.extractors.tdnn import TdnnConfig, sliding_cmn
from pipeline.features.feeding import ClipContext
from pipeline.features.window_pooling import ClipFrames, padded_rows, pooled_ranges

TINY = TdnnConfig(windows=(4, 8), channels=(8, 8, 8, 8, 16), embedding_dim=8)


def _clip(n_frames: int, fps: float) -> Clip:
    return Clip("c", "train", "c", n_frames, fps, None, None, "audio.mp4", None)


def _run_engine_path(ext, front: np.ndarray, n_frames: int, fps: float, stride: int, batch: int) -> dict:
    """Drive the kind's feed / run_batch as the engine does, with a thread pool of loaders."""
    outputs = {name: np.zeros((len(strided_indices(n_frames, stride)), ext.embedding_dim), np.float32)
               for name in ext.outputs()}
    with cf.ThreadPoolExecutor(3) as pool:
        context = ClipContext(_clip(n_frames, fps), np.ones(n_frames, bool), batch, stride,
                              pool.submit, lambda rate: None)
        ext.compute_frontend = lambda wave: front  # the frontend under test, not a decode
        for job in type(ext).feed([ext], context):
            for key, rows in job.future.result().batches.items():
                for name, values in ext.run_batch(key.part, rows).items():
                    outputs[name][job.rows] = values.numpy()
    return outputs


@pytest.mark.parametrize("fps, stride, batch", [(10.0, 1, 4), (7.0, 3, 5)])
def test_per_clip_equals_the_network_on_each_window(fps, stride, batch):
    """Every window (clip edges included: the same pad rule) agrees to float rounding."""
    per_clip = create("tdnn", config=TINY, seed=1)
    per_window = create("tdnn", config=dataclasses.replace(TINY, per_clip=False), seed=1)
    per_clip.load()
    per_clip._model.frames[2].norm.running_mean.fill_(0.3)  # non-trivial BatchNorm statistics
    per_window._model = per_clip._model
    front = np.random.default_rng(0).normal(-40, 10, size=(900, 64)).astype(np.float32)
    n_frames = 60
    got = _run_engine_path(per_clip, front, n_frames, fps, stride, batch)
    indices = strided_indices(n_frames, stride)
    for w in TINY.windows:
        windows = frame_windows(front, per_window.frontend_frame_rate, n_frames, fps, w, indices)
        assert windows.shape[1] >= 15  # long enough for the receptive field: the exact case
        expected = per_window.embed(torch.from_numpy(windows)).numpy()
        np.testing.assert_allclose(got[f"tdnn_w{w}"], expected, rtol=1e-4, atol=1e-4)


def test_short_windows_take_real_neighbours_not_repeated_rows():
    ext = create("tdnn", config=TINY, seed=2)
    ext.load()
    front = np.random.default_rng(1).normal(size=(400, 64)).astype(np.float32)
    frames = ClipFrames(ext, front, origin=-20)
    ClipFrames.block = 64  # several blocks over the clip
    try:
        starts = np.array([-3, 50, 120, 395])
        first, stop = pooled_ranges(starts, 10, 7, 7)  # 10 rows < 15: one output each
        np.testing.assert_array_equal(first, starts - 2 + 7)
        sums = frames.window_sums(first, stop)
    finally:
        ClipFrames.block = 2048
    for k, centre in enumerate(first):
        rows = padded_rows(front, centre - 7, centre + 8, "min", front.min())
        x = torch.from_numpy(rows).T[None]
        expected = ext._model.frame_level(x)[0, :, 0].double().numpy()
        np.testing.assert_allclose(sums[k, :16], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(sums[k, 16:32], expected ** 2, rtol=1e-5, atol=1e-5)
        assert sums[k, 32] == 1


def test_prefix_sums_stay_bounded_on_a_long_clip():
    """Memory follows the longest window and the block, not the clip's length."""
    ext = create("tdnn", config=TINY, seed=0)
    front = np.zeros((200_000, 64), np.float32)
    t_win = window_length(64, 25.0, 200.0)
    frames = ClipFrames(ext, front, origin=int(window_starts(np.array([0]), 25.0, 200.0, t_win)[0]) + 7)
    held = 0
    for start in range(0, 40_000, 50):
        starts = window_starts(np.arange(start, start + 50), 25.0, 200.0, t_win)
        first, stop = pooled_ranges(starts, t_win, 7, 7)
        frames.window_sums(first, stop)
        held = max(held, frames.cum.shape[0])
    assert held <= t_win + 50 * 8 + ClipFrames.block + 1


def test_sliding_cmn_is_kaldis_definition():
    x = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
    out = sliding_cmn(x, 10)
    for t in range(50):
        begin = min(max(t - 5, 0), 50 - 10)  # centred, shifted to stay inside
        np.testing.assert_allclose(out[t], x[t] - x[begin:begin + 10].mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(sliding_cmn(x[:8], 10), x[:8] - x[:8].mean(axis=0), atol=1e-5)


def test_config_rules_and_version():
    with pytest.raises(PipelineError, match="per_clip=false"):
        create("tdnn", config=dataclasses.replace(TINY, mean_norm="window"))
    with pytest.raises(PipelineError, match="mean_norm"):
        create("tdnn", config=dataclasses.replace(TINY, mean_norm="bogus"))
    old = create("tdnn", config=dataclasses.replace(TINY, mean_norm="window", per_clip=False))
    assert old.frame_context() is None and not old.per_clip
    assert create("tdnn", config=TINY).version == 2
    assert old.cache_key != create("tdnn", config=TINY).cache_key
