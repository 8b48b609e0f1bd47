"""``fer-pipeline finetune --backbone tdnn``: the x-vector TDNN on log-mel windows labelled by their
centre frame; the folder loads in ``extract -e tdnn``, which applies the recorded CMN by itself and
gives the trained network's own forward on the window (log-mel computed by librosa)."""

import librosa
import numpy as np
import pytest
import torch

from pipeline.data.manifest import iter_manifest
from pipeline.data.media import decode_audio
from pipeline.features.audio_windows import frame_windows
from pipeline.features.config import ExtractConfig
from pipeline.features.extractors.tdnn import XVector, sliding_cmn
from pipeline.features.store import FeatureStore
from pipeline.features.weights_record import read_record
from pipeline.finetune.config import build_config
from pipeline.finetune.loop import work_dir
from stages.extract import run_extract
from stages.finetune import finetune

ARCH = {"channels": [16, 16, 16, 16, 24], "embedding_dim": 8}
SETS = ["backbone=tdnn", "epochs=2", "batch_size=16", "lr=1e-3", "tdnn.channels=[16,16,16,16,24]",
        "tdnn.embedding_dim=8", "tdnn.mean_norm=sliding"]


pytestmark = pytest.mark.slow  # a fine-tune and an extraction (about a minute on 2 cores)


@pytest.fixture(scope="module")
def tuned(demo_manifests, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "tdnn"
    return out, finetune(build_config(demo_manifests, sets=SETS), out)


def test_tdnn_folder_loads_in_extract_with_its_cmn(tuned, demo_manifests, tmp_path):
    out, result = tuned
    record = read_record(out)
    assert (record.family, record.model) == ("tdnn", "xvector")
    assert record.preprocessing["mean_norm"] == "sliding" and record.preprocessing["window"] == 32
    # No mean_norm option given to extract: the record's sliding CMN is applied.
    config = ExtractConfig(extractors=["tdnn"], configs={"tdnn": {**ARCH, "windows": [32]}},
                           weights={"tdnn": str(out)}, device="cpu", precision="fp32",
                           batch_size=8, audio_stride=1, splits=["train"])
    run_extract(config, demo_manifests, tmp_path / "f.zarr")
    clip = next(c for c in iter_manifest(demo_manifests / "train.jsonl") if c.audio_path)
    got = FeatureStore(tmp_path / "f.zarr").read(clip.clip_id, "tdnn_w32").astype(np.float32)

    # The reference: librosa's log-mel (jin2021: 64 mels, 10 ms window, 5 ms hop, 512-point FFT),
    # Kaldi's sliding CMN over 3 s, the window of each frame, the trained network's own forward.
    wave = decode_audio(clip.audio_path, 16000)
    power = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=512, win_length=160,
                                           hop_length=80, n_mels=64, center=True,
                                           pad_mode="constant", norm="slaney", htk=False)
    mel = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=80.0).T.astype(np.float32)
    mel = sliding_cmn(mel, 600)
    frames = np.arange(clip.n_frames)
    windows = frame_windows(mel, 200.0, clip.n_frames, clip.fps, 32, frames, pad="min")
    best = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)["best_state"]
    net = XVector(64, tuple(ARCH["channels"]), (5, 3, 3, 1, 1), (1, 2, 3, 1, 1), 8)
    net.load_state_dict(best, strict=True)
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(windows)).numpy()
    # float16 storage and librosa-vs-torchaudio rounding (1e-6 of the peak in dB).
    np.testing.assert_allclose(got, expected, rtol=5e-3, atol=5e-3 * np.abs(expected).max())


def test_tdnn_training_changes_the_embedding_and_records_its_data(tuned, demo_manifests):
    out, result = tuned
    record = result.record
    assert record.epochs_run == 2 and record.selected_on == "train-dev"
    state = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)
    torch.manual_seed(0)
    initial = XVector(64, tuple(ARCH["channels"]), (5, 3, 3, 1, 1), (1, 2, 3, 1, 1), 8)
    moved = [k for k, v in initial.state_dict().items()
             if v.dtype.is_floating_point and not torch.equal(v, state["best_state"][k])]
    assert moved, "fine-tuning left every weight as it was"


def test_a_tdnn_fine_tune_without_weights_starts_from_extracts_random_network(demo_manifests):
    # The comparison "random frozen vs fine-tuned" is only fair if both start from one network.
    from pipeline.features.extractors.tdnn import Tdnn, TdnnConfig
    from pipeline.finetune.backbone_choice import backbone_for

    config = build_config(demo_manifests, sets=SETS)
    start = backbone_for(config).build().state_dict()
    extractor = Tdnn(config=TdnnConfig(channels=tuple(ARCH["channels"]),
                                       embedding_dim=ARCH["embedding_dim"]), seed=config.seed)
    extractor.load()
    random = extractor._model.state_dict()
    assert start.keys() == random.keys()
    for name in start:
        assert torch.equal(start[name], random[name]), name
