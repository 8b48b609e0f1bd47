"""Audio backbones with published weights, on tiny models the tests build and save in each library's
own layout: ``hf_audio`` (wav2vec2/HuBERT/WavLM via ``save_pretrained``) against transformers' own
forward pooled by hand, ``ecapa`` (a SpeechBrain folder) against SpeechBrain's ``encode_batch``,
``egemaps`` against ``opensmile.Smile.process_signal``.
"""

import numpy as np
import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.features.audio_windows import frame_windows, window_length, window_starts
from pipeline.features.extractors import create
from pipeline.features.extractors.ecapa import EcapaConfig
from pipeline.features.extractors.egemaps import EgemapsConfig
from pipeline.features.extractors.hf_audio import HfAudioConfig

transformers = pytest.importorskip("transformers")

FPS = 25.0
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def wave(seconds: float, seed: int = 0, rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).normal(0, 0.05, t.size)
    return (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 1.5 * t)) + noise).astype(np.float32)


def save_tiny(kind: str, folder) -> torch.nn.Module:
    config_cls, model_cls = {
        "wav2vec2": (transformers.Wav2Vec2Config, transformers.Wav2Vec2Model),
        "hubert": (transformers.HubertConfig, transformers.HubertModel),
        "wavlm": (transformers.WavLMConfig, transformers.WavLMModel),
    }[kind]
    torch.manual_seed(3)
    model = model_cls(config_cls(**TINY)).eval()
    model.save_pretrained(folder)
    transformers.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return model


def pooled_by_hand(states: np.ndarray, rate: float, window: int, frames: np.ndarray) -> np.ndarray:
    t_win = window_length(window, FPS, rate)
    starts = window_starts(frames, FPS, rate, t_win)
    assert starts.min() >= 0 and (starts + t_win).max() <= len(states)  # interior frames only
    return np.stack([states[s:s + t_win].mean(axis=0) for s in starts])


@pytest.mark.parametrize("kind", ["wav2vec2", "hubert", "wavlm"])
def test_hf_audio_equals_transformers_pooled_by_hand(kind, tmp_path):
    model = save_tiny(kind, tmp_path)
    audio = wave(3.0)
    extractor = create("hf_audio", config=HfAudioConfig(windows=(16, 32)), weights=tmp_path)
    assert extractor.frontend_sample_rate == 16000 and extractor.frontend_frame_rate == 16000 / 80
    states = extractor.compute_frontend(audio)
    inputs = transformers.Wav2Vec2FeatureExtractor.from_pretrained(tmp_path)(
        audio, sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        direct = model(inputs, output_hidden_states=True).hidden_states[-1][0].numpy()
    assert states.shape == direct.shape
    np.testing.assert_allclose(states, direct, atol=1e-4, rtol=1e-4)
    frames = np.array([30, 37, 45])  # interior: every window lies inside the 3 s clip
    for window in extractor.windows:
        windows = frame_windows(states, extractor.frontend_frame_rate, 75, FPS, window, frames)
        out = extractor.embed(torch.from_numpy(windows)).numpy()
        expected = pooled_by_hand(direct, extractor.frontend_frame_rate, window, frames)
        np.testing.assert_allclose(out, expected, atol=1e-4, rtol=1e-4)


def test_hf_audio_layers_stack_and_chunks(tmp_path):
    model = save_tiny("wav2vec2", tmp_path)
    audio = wave(2.0, seed=1)
    inputs = torch.from_numpy((audio - audio.mean()) / np.sqrt(audio.var() + 1e-7))[None]
    with torch.no_grad():
        hidden = torch.stack(model(inputs, output_hidden_states=True).hidden_states).numpy()[:, 0]
    stacked = create("hf_audio", config=HfAudioConfig(layers=(), combine="stack"), weights=tmp_path)
    assert stacked.outputs()["hf_audio_w32"].shape == (3, 32)  # input + 2 layers, kept apart
    rows = stacked.compute_frontend(audio)
    np.testing.assert_allclose(rows, hidden.transpose(1, 0, 2).reshape(len(rows), -1), atol=1e-4)
    assert stacked.embed(torch.from_numpy(rows[None, :10])).shape == (1, 3, 32)
    averaged = create("hf_audio", config=HfAudioConfig(layers=(1, 2)), weights=tmp_path)
    np.testing.assert_allclose(averaged.compute_frontend(audio), hidden[1:].mean(0), atol=1e-4)
    # 0.2 s chunks whose context covers the whole clip: the chunk bookkeeping must give back the
    # one-shot result row for row; with short context the conv rows still align (same length).
    covered = create("hf_audio", config=HfAudioConfig(chunk_seconds=0.2, context_seconds=5.0),
                     weights=tmp_path)
    np.testing.assert_allclose(covered.compute_frontend(audio), hidden[-1], atol=1e-4)
    short = create("hf_audio", config=HfAudioConfig(chunk_seconds=0.2, context_seconds=0.1),
                   weights=tmp_path).compute_frontend(audio)
    assert short.shape == hidden[-1].shape and np.isfinite(short).all()
    with pytest.raises(PipelineError, match="layers"):
        create("hf_audio", config=HfAudioConfig(layers=(5,)), weights=tmp_path)


def test_hf_audio_refuses_a_folder_without_a_model(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(PipelineError, match="config.json"):
        create("hf_audio", weights=tmp_path)


# --- ecapa: a SpeechBrain folder as published (hyperparams.yaml + embedding_model.ckpt) ---

ECAPA_YAML = """\
n_mels: 80
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: [32, 32, 32, 32, 96]
    attention_channels: 16
    lin_neurons: 192
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
    paths:
        embedding_model: {folder}/embedding_model.ckpt
"""


@pytest.fixture(scope="module")
def ecapa_folder(tmp_path_factory):
    pytest.importorskip("speechbrain")
    from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN

    folder = tmp_path_factory.mktemp("spkrec-ecapa")
    torch.manual_seed(8)
    model = ECAPA_TDNN(input_size=80, channels=[32, 32, 32, 32, 96], attention_channels=16,
                       lin_neurons=192)
    for module in model.modules():  # non-trivial statistics, so loading the file must matter
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    (folder / "hyperparams.yaml").write_text(ECAPA_YAML.format(folder=folder))
    return folder


@pytest.fixture(scope="module")
def speechbrain_encoder(ecapa_folder, tmp_path_factory):
    from speechbrain.inference.speaker import EncoderClassifier

    return EncoderClassifier.from_hparams(source=str(ecapa_folder),
                                          savedir=str(tmp_path_factory.mktemp("sb-save")))


def test_ecapa_folder_matches_speechbrains_encode_batch(ecapa_folder, speechbrain_encoder):
    audio = wave(2.0, seed=2)
    extractor = create("ecapa", config=EcapaConfig(windows=(32,)), weights=ecapa_folder)
    assert extractor.frontend_frame_rate == 100.0 and extractor.outputs()["ecapa_w32"].shape == (192,)
    feats = extractor.compute_frontend(audio)
    with torch.no_grad():
        whole = speechbrain_encoder.encode_batch(torch.from_numpy(audio)[None])[:, 0]
    # A window covering the whole clip is exactly encode_batch on the clip.
    torch.testing.assert_close(extractor.embed(torch.from_numpy(feats[None])), whole,
                               rtol=1e-4, atol=1e-4)
    # An interior window (32 frames at 25 fps: 128 filterbank rows) against encode_batch on the
    # same stretch of audio: they differ only where the cut-out's edge frames see zero padding.
    frames = np.array([25])
    windows = frame_windows(feats, 100.0, 50, FPS, 32, frames)
    start = window_starts(frames, FPS, 100.0, windows.shape[1])[0]
    segment = audio[start * 160:(start + windows.shape[1] - 1) * 160 + 1]
    ours = extractor.embed(torch.from_numpy(windows))
    with torch.no_grad():
        theirs = speechbrain_encoder.encode_batch(torch.from_numpy(segment)[None])[:, 0]
    assert speechbrain_encoder.mods.compute_features(torch.from_numpy(segment)[None]).shape[1] == 128
    cosine = torch.nn.functional.cosine_similarity(ours, theirs).item()
    assert cosine > 0.999, cosine  # edge frames only (measured 0.99989 here)
    assert not torch.allclose(ours, whole, atol=1e-2)  # and the window is not the whole clip


def test_ecapa_refuses_a_folder_of_another_model(ecapa_folder, tmp_path):
    torch.save({"blocks.0.conv.weight": torch.zeros(3)}, tmp_path / "embedding_model.ckpt")
    (tmp_path / "hyperparams.yaml").write_text((ecapa_folder / "hyperparams.yaml").read_text())
    with pytest.raises(PipelineError, match="embedding_model.ckpt: does not fit") as error:
        create("ecapa", weights=tmp_path).load()
    assert "\n" not in str(error.value) and len(str(error.value)) < 400
    with pytest.raises(PipelineError, match="embedding_dim=192"):
        create("xvector", weights=ecapa_folder).load()


# --- egemaps: opensmile's own functionals on the same window ---

def test_egemaps_equals_opensmile_on_the_same_window():
    opensmile = pytest.importorskip("opensmile")
    rate = 16000
    t = np.arange(3 * rate) / rate
    tone = (0.4 * np.sin(2 * np.pi * 200 * t * (1 + 0.1 * np.sin(2 * np.pi * 2 * t)))).astype(np.float32)
    extractor = create("egemaps", config=EgemapsConfig(windows=(32,)))
    signal = extractor.compute_frontend(tone)
    assert signal.shape == (3 * rate, 1) and extractor.outputs()["egemaps_w32"].dtype == "float32"
    frames = np.array([30, 45])  # interior windows of 1.28 s in a 3 s clip at 25 fps
    windows = frame_windows(signal, float(rate), 75, FPS, 32, frames)
    out = extractor.embed(torch.from_numpy(windows)).numpy()
    smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                            feature_level=opensmile.FeatureLevel.Functionals)
    starts = window_starts(frames, FPS, float(rate), windows.shape[1])
    expected = np.stack([smile.process_signal(tone[s:s + windows.shape[1]], rate).to_numpy()[0]
                         for s in starts])
    assert out.shape == (2, 88)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert abs(out[0, 0] - expected[0, 0]) < 1e-5 and np.ptp(out[0]) > 1  # F0 etc., not zeros


def test_hf_audio_loads_an_hf_cache_folder(tmp_path):
    cache = tmp_path / "models--org--tiny-w2v"
    snapshot = cache / "snapshots" / "0123abcd"
    save_tiny("hubert", snapshot)
    (cache / "refs").mkdir()
    (cache / "refs" / "main").write_text("0123abcd\n")
    audio = wave(1.0, seed=4)
    from_cache = create("hf_audio", weights=cache).compute_frontend(audio)
    from_snapshot = create("hf_audio", weights=snapshot).compute_frontend(audio)
    np.testing.assert_array_equal(from_cache, from_snapshot)
    assert from_cache.shape == (199, 32)  # 1 s at 16 kHz through the tiny conv stack
