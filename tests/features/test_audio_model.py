"""``audio_model``: a waveform-in, embedding-out model as TorchScript or ONNX gives, window by
window, what the model itself gives on the same samples; frame-level outputs are mean-pooled."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.errors import PipelineError
from pipeline.features.extractors import create
from pipeline.features.extractors.audio_model import AudioModelConfig


class _Encoder(nn.Module):
    """A tiny speech encoder: strided conv over the waveform, then per-frame features
    (``frames=True``: [B, T', D]) or their mean through a linear layer ([B, D])."""

    def __init__(self, frames: bool) -> None:
        super().__init__()
        self.frames = frames
        self.conv = nn.Conv1d(1, 6, 400, stride=160)
        self.out = nn.Linear(6, 5)

    def forward(self, wave):
        h = torch.relu(self.conv(wave.unsqueeze(1))).transpose(1, 2)  # [B, T', 6]
        return self.out(h) if self.frames else self.out(h.mean(dim=1))


def _windows(n: int = 3, samples: int = 8000) -> torch.Tensor:
    rng = np.random.default_rng(0)
    return torch.from_numpy(rng.standard_normal((n, samples, 1)).astype(np.float32) * 0.1)


def test_torchscript_embeddings_are_the_models_own(tmp_path):
    torch.manual_seed(0)
    model = _Encoder(frames=False).eval()
    torch.jit.script(model).save(str(tmp_path / "enc.pt"))
    with pytest.raises(PipelineError, match=r"enc.pt: a TorchScript model .*trust_code=true"):
        create("audio_model", weights=tmp_path / "enc.pt")  # runs the file's code: needs trust
    extractor = create("audio_model", config=AudioModelConfig(windows=(4, 8)),
                       weights=tmp_path / "enc.pt", trust_code=True)
    assert extractor.outputs()["audio_model_w4"].shape == (5,)
    assert set(extractor.outputs()) == {"audio_model_w4", "audio_model_w8"}
    windows = _windows()
    with torch.no_grad():
        expected = model(windows[..., 0])
    torch.testing.assert_close(extractor.embed(windows), expected, rtol=1e-5, atol=1e-6)
    assert extractor.compute_frontend(np.ones(10, np.float32)).shape == (10, 1)


def test_onnx_frame_level_outputs_are_mean_pooled(tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch.manual_seed(1)
    model = _Encoder(frames=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 16000),), str(tmp_path / "enc.onnx"), dynamo=False,
                          input_names=["wave"], output_names=["hidden"],
                          dynamic_axes={"wave": {0: "b", 1: "n"}, "hidden": {0: "b", 1: "t"}})
    extractor = create("audio_model", weights=tmp_path / "enc.onnx")
    windows = _windows(samples=12000)
    with torch.no_grad():
        expected = model(windows[..., 0]).mean(dim=1)
    torch.testing.assert_close(extractor.embed(windows), expected, rtol=1e-4, atol=1e-5)
    with pytest.raises(PipelineError, match="no output 'nope'; it has hidden"):
        create("audio_model", config=AudioModelConfig(output="nope"), weights=tmp_path / "enc.onnx")


def test_bad_files_are_one_line(tmp_path):
    with pytest.raises(PipelineError, match="needs --weights audio_model="):
        create("audio_model")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(PipelineError, match="junk.pt: not a runnable TorchScript model"):
        create("audio_model", weights=tmp_path / "junk.pt", trust_code=True)


@pytest.mark.slow
def test_it_runs_in_extract(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    from extract_fixtures import make_dataset
    from pipeline.features.config import ExtractConfig
    from pipeline.features.store import FeatureStore
    from stages.extract import run_extract

    torch.jit.script(_Encoder(frames=False).eval()).save(str(tmp_path / "enc.pt"))
    manifests = make_dataset(tmp_path / "data", n_clips=1, n_frames=12, missing=())
    config = ExtractConfig(extractors=["audio_model"], configs={"audio_model": {"windows": [4]}},
                           weights={"audio_model": str(tmp_path / "enc.pt")}, device="cpu",
                           batch_size=4, trust_code=True)
    result = run_extract(config, manifests, tmp_path / "f.zarr")
    assert result.ok and not result.random_weights
    store = FeatureStore(tmp_path / "f.zarr")
    (clip,) = store.clip_ids()
    data = store.read(clip, "audio_model_w4")
    assert data.shape == (12, 5) and np.isfinite(data.astype(np.float32)).all()
    assert np.abs(data.astype(np.float32)).sum() > 0
