"""The GPU path's choices, checked without a GPU: where frames are decoded, and how batches travel.

Nothing here runs CUDA: the selection logic is driven with mocks, the batched decoder runs on the
CPU against PIL, and the pinned, non-blocking copy is checked by what it is asked to do.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.features import batching
from pipeline.features.batching import BatchStream, to_device
from pipeline.features.feeding import InputError
from pipeline.features.loading import decode_jpegs, jpeg_decode_device


@pytest.mark.parametrize("device, cuda, version, expected", [
    ("cpu", True, "0.21.0", "cpu"),  # a CPU model: PIL, as before
    ("cuda", False, "0.21.0", "cpu"),  # no CUDA torch can use
    ("cuda:1", True, "0.18.1+cu121", "cpu"),  # no batched GPU decode_jpeg before 0.19
    ("cuda:1", True, "0.21.0+cu128", "cuda:1"),
])
def test_decode_device_selection(device, cuda, version, expected):
    from pipeline.compat import ensure_torchvision

    ensure_torchvision()
    import torchvision

    with mock.patch.object(torch.cuda, "is_available", lambda: cuda), \
            mock.patch.object(torchvision, "__version__", version):
        assert jpeg_decode_device(device) == expected


def _jpegs(tmp_path, n=3):
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n):
        path = tmp_path / f"{k:05d}.jpg"
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def test_one_batched_decode_call_and_a_bad_file_named(tmp_path):
    from pipeline.compat import ensure_torchvision

    ensure_torchvision()
    import torchvision.io

    paths = _jpegs(tmp_path)
    calls = []

    def fake_decode(data, mode=None, device="cpu"):
        calls.append((data, device))
        if isinstance(data, list):
            if any(bytes(d[:2].tolist()) != b"\xff\xd8" for d in data):
                raise RuntimeError("batch failed")
            return [torch.zeros(3, 40, 48, dtype=torch.uint8) for _ in data]
        if bytes(data[:4].tolist()) != b"\xff\xd8\xff\xe0":
            raise RuntimeError("Not a JPEG file")
        return torch.zeros(3, 40, 48, dtype=torch.uint8)

    with mock.patch.object(torchvision.io, "decode_jpeg", fake_decode):
        out = decode_jpegs(paths, "cuda:0")
        assert len(out) == 3 and len(calls) == 1 and calls[0][1] == "cuda:0"
        assert [bytes(d.numpy()) for d in calls[0][0]] == [p.read_bytes() for p in paths]
        bad = tmp_path / "00009.jpg"
        bad.write_bytes(b"not a jpeg")
        with pytest.raises(InputError, match="00009.jpg: undecodable JPEG"):
            decode_jpegs([paths[0], bad], "cuda:0")
    with pytest.raises(InputError, match="unreadable image"):
        decode_jpegs([tmp_path / "absent.jpg"], "cpu")


def test_batched_decode_matches_pil(tmp_path):
    paths = _jpegs(tmp_path)
    try:
        decoded = decode_jpegs(paths, "cpu")
    except InputError as e:  # this CPU torch cannot load the CUDA torchvision's image extension
        pytest.skip(f"torchvision cannot decode here: {e.reason}")
    for path, tensor in zip(paths, decoded):
        reference = np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)
        assert tensor.dtype == torch.uint8 and tensor.shape == (3, 40, 48)
        assert np.abs(tensor.numpy().astype(int) - reference).mean() < 2  # libjpeg vs libjpeg(-turbo)


def test_cpu_batches_are_not_pinned_or_moved():
    batch = torch.zeros(2, 3)
    with mock.patch.object(torch.Tensor, "pin_memory", side_effect=AssertionError("pinned")):
        assert to_device(batch, "cpu") is batch
        seen = []
        stream = BatchStream(lambda x: seen.append(x) or {"y": x.sum(1, keepdim=True)}, 4)
        stream.add("clip", np.arange(2), batch)
        stream.step(flush=True)
        assert seen[0].shape == (4, 3)


def test_cuda_batches_are_pinned_and_copied_without_blocking():
    pinned = mock.MagicMock(name="pinned")
    batch = mock.MagicMock(spec=torch.Tensor)
    batch.device = torch.device("cpu")
    batch.pin_memory.return_value = pinned
    assert to_device(batch, "cuda:0") is pinned.to.return_value
    pinned.to.assert_called_once_with("cuda:0", non_blocking=True)
    on_gpu = mock.MagicMock(spec=torch.Tensor)
    on_gpu.device = torch.device("cuda", 0)
    assert to_device(on_gpu, "cuda:0") is on_gpu  # decoded there: no copy
    with mock.patch.object(batching, "to_device", wraps=lambda b, d: b) as moved:
        stream = BatchStream(lambda x: {"y": x}, 2, device="cuda:0")
        stream.add("clip", np.arange(1), torch.ones(1, 3))
        stream.step(flush=True)
        assert moved.call_args.args[1] == "cuda:0"
