"""Extractors: a registry sweep of output contracts, Swin against timm's own forward, IResNet against
the published arcface_torch parameter names, weights files, cache keys and pickling.

Swin-Tiny builds take seconds on two cores: those tests are ``slow`` and share module fixtures.
"""

import hashlib
import json
import pickle

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import timm  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.audio_windows import frame_windows  # noqa: E402
from pipeline.features.extractors import create, registry  # noqa: E402
from pipeline.features.extractors.iresnet import LAYERS, IResNet, IResNetConfig  # noqa: E402
from pipeline.features.extractors.swin import SWIN_TINY, SwinConfig  # noqa: E402
from pipeline.features.extractors.swin_audio import SwinAudioConfig  # noqa: E402
from pipeline.features.extractors.tdnn import TdnnConfig  # noqa: E402

FLOAT16_MAX = 65504.0


def images(n: int, size: int = 32, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def batch(extractor, n: int = 2, size: int = 32) -> torch.Tensor:
    return torch.stack([extractor.preprocess(im) for im in images(n, size)])


# --- registry sweep: every extractor builds with random weights and keeps its output contract ---

SWEEP_CONFIGS = {  # the smallest of each (default config where not listed)
    "iresnet": IResNetConfig(depth=50),
    "tdnn": TdnnConfig(windows=(32,)),
    "swin_audio": SwinAudioConfig(windows=(32,)),
}


def test_registry_holds_every_extractor():
    # A superset: tests elsewhere (tests/stages) register a test-only extractor in this process.
    assert {"swin", "iresnet", "logmel", "tdnn", "swin_audio"} <= set(registry())
    with pytest.raises(KeyError, match="unknown extractor"):
        create("nope")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(registry()))
def test_outputs_match_their_declared_specs(name):
    if name in ("onnx", "audio_model"):
        pytest.skip("no random model of a file's architecture exists: tests/features/"
                    "test_onnx_face.py and test_audio_model.py cover them")
    extractor = create(name, config=SWEEP_CONFIGS.get(name), seed=0)
    assert extractor.random_weights == extractor.has_weights  # log-mel has no weights to randomise
    specs = extractor.outputs()
    if extractor.kind == "image":
        rows = 3
        out = extractor.forward(batch(extractor, rows))
    elif extractor.kind == "audio":
        wave = np.random.default_rng(0).normal(0, 0.1, extractor.sample_rate // 2).astype(np.float32)
        mel = extractor.compute(wave)
        assert mel.dtype == np.float32 and specs[name].rate == "audio"
        rows = 1 + len(wave) // extractor.params.hop_length
        out = {name: torch.from_numpy(mel)}
    else:
        rate = extractor.frontend_sample_rate
        wave = np.random.default_rng(0).normal(0, 0.1, rate).astype(np.float32)
        front = extractor.compute_frontend(wave)
        frames = np.array([0, 12, 24])  # first, middle and last of a 1 s clip at 25 fps
        rows = len(frames)
        out = {
            f"{extractor.prefix}_w{w}": extractor.embed(torch.from_numpy(frame_windows(
                front, extractor.frontend_frame_rate, 25, 25.0, w, frames, pad=extractor.pad_mode)))
            for w in extractor.windows
        }
    assert set(out) == set(specs)
    for array, value in out.items():
        assert value.dtype == torch.float32 and value.device.type == "cpu"
        assert tuple(value.shape) == (rows, *specs[array].shape), array
        assert torch.isfinite(value).all() and value.abs().max() < FLOAT16_MAX  # storable as float16
        assert value.std() > 0, f"{array}: constant output"
    json.dumps(extractor.describe())  # the store's root attributes take it as is


# --- swin: timm's own forward, weights files, cache keys ---

@pytest.fixture(scope="module")
def swin_weights(tmp_path_factory):
    """A Swin-Tiny with its own seed, and its state dict in a file (as timm loads weights)."""
    torch.manual_seed(1234)
    reference = timm.create_model(SWIN_TINY, pretrained=False, num_classes=0).eval()
    path = tmp_path_factory.mktemp("swin") / "swin_tiny.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


@pytest.fixture(scope="module")
def swin_loaded(swin_weights):
    _, path = swin_weights
    extractor = create("swin", config=SwinConfig(tokens=True), weights=path)
    extractor.load()
    return extractor


@pytest.mark.slow
def test_swin_equals_timms_own_forward(swin_weights, swin_loaded):
    reference, _ = swin_weights
    x = batch(swin_loaded)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    out = swin_loaded.forward(x)
    with torch.no_grad():
        tokens = reference.forward_features(x)
        pooled = reference.forward_head(tokens, pre_logits=True)
    assert out["swin"].shape == (2, 768) and out["swin_tokens"].shape == (2, 7, 7, 768)
    assert (out["swin"] - pooled).abs().max() <= 1e-5
    assert (out["swin_tokens"] - tokens).abs().max() <= 1e-5
    assert swin_loaded.outputs()["swin_tokens"].shape == (7, 7, 768)
    assert set(create("swin").outputs()) == {"swin"}  # tokens only when asked for


@pytest.mark.slow
def test_swin_preprocessing_is_the_models_own_eval_transform(swin_weights, swin_loaded):
    reference, _ = swin_weights
    image = images(1, size=48)[0]
    config = timm.data.resolve_model_data_config(reference)
    expected = timm.data.create_transform(**config, is_training=False)(image)
    assert torch.equal(swin_loaded.preprocess(image), expected)


@pytest.mark.slow
def test_swin_bf16_is_close_to_fp32(swin_weights, swin_loaded):
    _, path = swin_weights
    x = batch(swin_loaded)
    bf16 = create("swin", weights=path, precision="bf16").forward(x)["swin"]
    fp32 = swin_loaded.forward(x)["swin"]
    assert bf16.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(bf16, fp32).min() > 0.99


def test_cache_key_follows_the_weights_file(tmp_path):
    path = tmp_path / "w.pth"
    path.write_bytes(b"first weights")  # keys and hashes need no loading
    first = create("swin", weights=path)
    assert first.weights_sha256 == hashlib.sha256(b"first weights").hexdigest()
    assert not first.random_weights and first.describe()["weights_sha256"] == first.weights_sha256
    path.write_bytes(b"other weights")
    second = create("swin", weights=path)
    assert second.cache_key != first.cache_key
    # Random weights: the seed decides; with a file it does not.
    assert create("swin", seed=1).cache_key != create("swin", seed=2).cache_key
    with_file = [create("swin", weights=path, seed=seed).cache_key for seed in (1, 2)]
    assert with_file[0] == with_file[1]
    assert create("swin", config=SwinConfig(tokens=True)).cache_key != create("swin").cache_key


@pytest.mark.slow
def test_swin_audio_equals_timm_on_its_spectrogram_images(swin_weights, tmp_path):
    reference, _ = swin_weights
    path = tmp_path / "swin_tiny.safetensors"  # timm reads safetensors files too
    safetensors.torch.save_file(reference.state_dict(), path)
    extractor = create("swin_audio", config=SwinAudioConfig(windows=(32,)), weights=path)
    ramp = torch.arange(17.0)[None, :, None] + torch.linspace(0, -60, 128)  # [1, T, n_mels]
    windows = torch.cat([ramp, torch.randn(1, 17, 128)])
    pictures = extractor.images(windows)
    assert pictures.shape == (2, 3, 224, 224)
    pixels = pictures * torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    pixels = pixels + torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    assert pixels.amin(dim=(1, 2, 3)).abs().max() < 1e-5  # each window spans [0, 1]
    assert (pixels.amax(dim=(1, 2, 3)) - 1).abs().max() < 1e-5
    # High frequencies (low dB on the ramp) at the top, later time to the right.
    assert pixels[0, 0, 0, 0] < pixels[0, 0, -1, 0] and pixels[0, 0, -1, 0] < pixels[0, 0, -1, -1]
    with torch.no_grad():
        expected = reference.forward_head(reference.forward_features(pictures), pre_logits=True)
    assert (extractor.embed(windows) - expected).abs().max() <= 1e-5


@pytest.mark.slow
def test_swin_refuses_weights_of_another_network(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(PipelineError, match="other.pth.*missing"):
        create("swin", weights=path).load()


# --- iresnet: the published arcface_torch names ---

PUBLISHED_NAMES = [  # from insightface recognition/arcface_torch backbone.pth files
    "conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var", "prelu.weight",
    "layer1.0.bn1.weight", "layer1.0.conv1.weight", "layer1.0.bn2.running_var", "layer1.0.prelu.weight",
    "layer1.0.conv2.weight", "layer1.0.bn3.bias", "layer1.0.downsample.0.weight",
    "layer1.0.downsample.1.weight", "layer1.0.downsample.1.running_mean", "layer1.2.conv2.weight",
    "layer2.0.downsample.0.weight", "layer4.2.bn3.running_var",
    "bn2.weight", "bn2.running_mean", "fc.weight", "fc.bias",
    "features.weight", "features.bias", "features.running_mean", "features.running_var",
]


@pytest.mark.parametrize("depth", [50, 100])
def test_iresnet_has_the_published_parameter_names(depth):
    with torch.device("meta"):  # names and shapes only: no memory, no time
        state = IResNet(LAYERS[depth]).state_dict()
    assert set(PUBLISHED_NAMES) <= set(state)
    blocks = {f"layer{i}": len({k.split(".")[1] for k in state if k.startswith(f"layer{i}.")})
              for i in range(1, 5)}
    assert tuple(blocks.values()) == {50: (3, 4, 14, 3), 100: (3, 13, 30, 3)}[depth]
    # Only each layer's first block has a shortcut projection (it halves the map).
    assert sorted({k.rsplit(".", 3)[0] for k in state if ".downsample." in k}) == [
        f"layer{i}.0" for i in range(1, 5)]
    assert tuple(state["fc.weight"].shape) == (512, 512 * 7 * 7)
    assert tuple(state["conv1.weight"].shape) == (64, 3, 3, 3)
    # Per block: 3 BN (5 entries each), 2 convs, 1 PReLU; shortcut: conv + BN; stem and head: 19.
    n_blocks = sum(LAYERS[depth])
    assert len(state) == 18 * n_blocks + 6 * 4 + 19


@pytest.mark.slow
def test_iresnet_loads_a_state_dict_file_and_reproduces_its_model(tmp_path):
    torch.manual_seed(7)
    source = IResNet(LAYERS[50])
    for module in source.modules():  # non-trivial running statistics, so the file must carry them
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    source.eval()
    path = tmp_path / "backbone.pth"
    torch.save(source.state_dict(), path)
    extractor = create("iresnet", config=IResNetConfig(depth=50), weights=path)
    x = batch(extractor, 2, size=112)
    assert x.shape == (2, 3, 112, 112) and -1.0 <= x.min() and x.max() <= 1.0
    out = extractor.forward(x)["iresnet"]
    with torch.no_grad():
        expected = source(x)
    assert out.shape == (2, 512)
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    wrong_depth = create("iresnet", config=IResNetConfig(depth=18), weights=path)
    with pytest.raises(PipelineError, match="backbone.pth.*unexpected"):
        wrong_depth.load()


def test_iresnet_preprocessing_matches_insightface():
    extractor = create("iresnet", config=IResNetConfig(depth=50))
    image = images(1, size=112)[0]
    pixels = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
    expected = (pixels / 255 - 0.5) / 0.5
    np.testing.assert_allclose(extractor.preprocess(image).numpy(), expected, atol=1e-6)
    assert extractor.preprocess(images(1, size=64)[0]).shape == (3, 112, 112)


# --- weights files, seeds and pickling, on the cheap TDNN ---

@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_tdnn_weights_file_round_trip_and_seeds(tmp_path, suffix):
    config = TdnnConfig(windows=(32,))
    windows = torch.randn(4, 40, 64)
    a = create("tdnn", config=config, seed=3)
    assert torch.equal(a.embed(windows), create("tdnn", config=config, seed=3).embed(windows))
    assert not torch.equal(a.embed(windows), create("tdnn", config=config, seed=4).embed(windows))
    path = tmp_path / f"tdnn{suffix}"
    state = a._model.state_dict()
    assert {"frames.0.conv.weight", "frames.4.norm.running_var", "segment.weight"} <= set(state)
    if suffix == ".pth":
        torch.save(state, path)
    else:
        safetensors.torch.save_file(state, path)
    loaded = create("tdnn", config=config, weights=path, seed=99)
    assert torch.equal(loaded.embed(windows), a.embed(windows))


def test_tdnn_handles_windows_shorter_than_its_context():
    out = create("tdnn", config=TdnnConfig(windows=(32,))).embed(torch.randn(2, 4, 64))
    assert out.shape == (2, 512) and torch.isfinite(out).all()


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_bad_weights_files_are_refused_with_the_path(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content is None:
        torch.save({"something.else": torch.zeros(2)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(PipelineError, match="bad.pth"):
        create("tdnn", weights=path).load()


def test_missing_weights_file_and_bad_precision_are_pipeline_errors(tmp_path):
    with pytest.raises(PipelineError, match="absent.pth"):
        create("tdnn", weights=tmp_path / "absent.pth")
    with pytest.raises(PipelineError, match="precision"):
        create("tdnn", precision="int8")


def test_pickled_extractor_travels_without_its_model():
    extractor = create("tdnn", config=TdnnConfig(windows=(32,)), seed=5)
    windows = torch.randn(2, 40, 64)
    expected = extractor.embed(windows)
    clone = pickle.loads(pickle.dumps(extractor))
    assert clone._model is None and len(pickle.dumps(extractor)) < 100_000
    assert torch.equal(clone.embed(windows), expected)
    # Image extractors preprocess in loader threads before any load(): the transform travels too.
    swin = pickle.loads(pickle.dumps(create("swin")))
    assert swin.preprocess(images(1)[0]).shape == (3, 224, 224)
