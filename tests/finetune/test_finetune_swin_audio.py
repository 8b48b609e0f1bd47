"""``fer-pipeline finetune --backbone swin_audio`` (paper 000's audio Swin; here timm's tiny
``test_vit`` through the extractor's model option): windows pass paper 000's purity rule; the
folder loads in ``extract -e swin_audio`` and gives the trained network's own forward on the
spectrogram image (log-mel by librosa, the rendering written out here from the extractor's
docstring); validation labels never matter."""

import librosa
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import timm  # noqa: E402
import timm.data  # noqa: E402

from pipeline.data.manifest import iter_manifest, load_clips  # noqa: E402
from pipeline.data.media import decode_audio  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.audio_windows import frame_windows  # noqa: E402
from pipeline.features.config import ExtractConfig  # noqa: E402
from pipeline.features.store import FeatureStore  # noqa: E402
from pipeline.features.weights_record import WEIGHTS_NAME, read_record  # noqa: E402
from pipeline.finetune.backbone_choice import backbone_for  # noqa: E402
from pipeline.finetune.config import build_config  # noqa: E402
from pipeline.finetune.loop import work_dir  # noqa: E402
from stages.extract import run_extract  # noqa: E402
from stages.finetune import finetune  # noqa: E402
from tests.finetune.test_finetune_timm import _poisoned  # noqa: E402

MODEL = "test_vit"
SETS = ["backbone=swin_audio", f"swin_audio.model={MODEL}", "epochs=2", "batch_size=16", "lr=1e-3"]
# The demo's dev clip is mostly unlabelled and changes label: the lenient rule at 0.5.
TUNE = [*SETS, "window_purity=0.5", "purity_rule=labelled"]

pytestmark = pytest.mark.slow  # fine-tunes and an extraction


@pytest.fixture(scope="module")
def tuned(demo_manifests, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "swin_audio"
    return out, finetune(build_config(demo_manifests, sets=TUNE), out)


def test_windows_follow_paper_000s_purity_rule(demo_manifests):
    clips = [c for c in load_clips(demo_manifests, splits=("train",)) if c.audio_path]
    for window, threshold in ((32, 0.8), (64, 0.5)):
        backbone = backbone_for(build_config(demo_manifests, sets=[*SETS, f"window={window}"]))
        samples = backbone.samples(clips)
        for i, clip in enumerate(clips):  # the paper's rule written out: share of all the frames
            labels = clip.labels.astype(int)
            expected = [t for t in range(clip.n_frames) if labels[t] >= 0 and np.mean(
                labels[max(0, t - window // 2):t + window // 2] == labels[t]) >= threshold - 1e-9]
            assert samples.frame[samples.clip == i].tolist() == expected
    with pytest.raises(PipelineError, match="set window_purity"):
        backbone_for(build_config(demo_manifests, sets=[*SETS, "window=40"]))


def test_swin_audio_folder_loads_in_extract_and_equals_the_trained_forward(tuned, demo_manifests,
                                                                           tmp_path):
    out, _ = tuned
    record = read_record(out)
    assert (record.family, record.model) == ("swin_audio", MODEL)
    assert record.preprocessing["window"] == 32 and record.preprocessing["purity"] == 0.5
    config = ExtractConfig(extractors=["swin_audio"],
                           configs={"swin_audio": {"model": MODEL, "windows": [32]}},
                           weights={"swin_audio": str(out)}, device="cpu", precision="fp32",
                           batch_size=8, audio_stride=1, splits=["train"])
    run_extract(config, demo_manifests, tmp_path / "f.zarr")
    clip = next(c for c in iter_manifest(demo_manifests / "train.jsonl") if c.audio_path)
    got = FeatureStore(tmp_path / "f.zarr").read(clip.clip_id, "swin_audio_w32").astype(np.float32)

    # Paper 000's log-mel by librosa (2048 FFT, hop 1024, 128 mels), each frame's window, the
    # spectrogram image (low frequencies at the bottom, resized, min-max scaled, 3 channels,
    # the model's mean and std) and timm's forward of the trained weights.
    wave = decode_audio(clip.audio_path, 16000)
    power = librosa.feature.melspectrogram(y=wave, sr=16000, n_fft=2048, hop_length=1024,
                                           n_mels=128, center=True, pad_mode="constant",
                                           norm="slaney", htk=False)
    mel = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=80.0).T.astype(np.float32)
    rate = 16000 / 1024
    windows = torch.from_numpy(frame_windows(mel, rate, clip.n_frames, clip.fps, 32, pad="min"))
    model = timm.create_model(MODEL, pretrained=False, num_classes=0)
    model.load_state_dict(torch.load(work_dir(out) / "checkpoint.pt",
                                     weights_only=True)["best_state"], strict=True)
    data = timm.data.resolve_model_data_config(model)
    x = windows.transpose(1, 2).flip(1)[:, None]
    x = F.interpolate(x, size=data["input_size"][1:], mode="bilinear", align_corners=False)
    low, high = x.amin(dim=(2, 3), keepdim=True), x.amax(dim=(2, 3), keepdim=True)
    x = ((x - low) / (high - low)).expand(-1, 3, -1, -1)
    x = (x - torch.tensor(data["mean"]).view(1, 3, 1, 1)) / torch.tensor(data["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = model.eval()(x).numpy()
    np.testing.assert_allclose(got, expected, rtol=5e-3, atol=5e-3 * np.abs(expected).max())
    # Training moved the weights away from the seeded random network it started from.
    from pipeline.features.extractors.seeding import seeded_build

    initial = seeded_build(lambda: timm.create_model(MODEL, pretrained=False, num_classes=0),
                           "swin_audio", 0)
    with torch.no_grad():
        assert not np.allclose(initial.eval()(x).numpy(), expected, rtol=5e-3, atol=5e-3)


def test_swin_audio_poisoned_validation_labels_give_identical_weights(tuned, demo_manifests,
                                                                     tmp_path):
    out, _ = tuned
    again = tmp_path / "again"
    finetune(build_config(_poisoned(demo_manifests, tmp_path), sets=TUNE), again)
    assert (again / WEIGHTS_NAME).read_bytes() == (out / WEIGHTS_NAME).read_bytes()


def test_swin_audio_folder_refuses_another_model_or_log_mel(tuned):
    from pipeline.features.extractors import create
    from pipeline.features.extractors.logmel import LogMelConfig
    from pipeline.features.extractors.swin_audio import SwinAudioConfig

    out, _ = tuned
    with pytest.raises(PipelineError, match="test_vit"):
        create("swin_audio", config=SwinAudioConfig(model="test_resnet"), weights=out)
    with pytest.raises(PipelineError, match="trained on log-mel"):
        create("swin_audio", config=SwinAudioConfig(model=MODEL, frontend=LogMelConfig(n_mels=64),
                                                    windows=(32,)),
               weights=out)


def test_one_audio_swin_per_window_and_a_folder_refuses_another_window(tuned, demo_manifests,
                                                                        tmp_path, capsys):
    from cli.main import main
    from pipeline.features.extractors import create
    from pipeline.features.extractors.swin_audio import SwinAudioConfig, SwinAudioW48Config

    out, _ = tuned  # trained on 32-frame windows
    # one folder silently serving all three windows (paper 000 trains one Swin per window)
    with pytest.raises(PipelineError, match=r"trained on 32-frame windows, about to serve "
                                            r"32, 48, 64-frame windows.*swin_audio_w32"):
        create("swin_audio", config=SwinAudioConfig(model=MODEL), weights=out)
    with pytest.raises(PipelineError, match="trained on 32-frame windows, about to serve 48"):
        create("swin_audio_w48", config=SwinAudioW48Config(model=MODEL), weights=out)
    code = main(["extract", "--manifests", str(demo_manifests), "--store", str(tmp_path / "x.zarr"),
                 "-e", "swin_audio_w64", "--set", f"configs.swin_audio_w64.model={MODEL}",
                 "--weights", f"swin_audio_w64={out}", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and "about to serve 64" in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    # its own window's extractor writes the array swin_audio writes for that window
    config = ExtractConfig(extractors=["swin_audio_w32"],
                           configs={"swin_audio_w32": {"model": MODEL}},
                           weights={"swin_audio_w32": str(out)}, device="cpu", precision="fp32",
                           batch_size=8, audio_stride=1, splits=["train"])
    run_extract(config, demo_manifests, tmp_path / "w.zarr")
    shared = ExtractConfig(extractors=["swin_audio"],
                           configs={"swin_audio": {"model": MODEL, "windows": [32]}},
                           weights={"swin_audio": str(out)}, device="cpu", precision="fp32",
                           batch_size=8, audio_stride=1, splits=["train"])
    run_extract(shared, demo_manifests, tmp_path / "s.zarr")
    clip = next(c for c in iter_manifest(demo_manifests / "train.jsonl") if c.audio_path)
    one = FeatureStore(tmp_path / "w.zarr").read(clip.clip_id, "swin_audio_w32")
    assert np.array_equal(one, FeatureStore(tmp_path / "s.zarr").read(clip.clip_id, "swin_audio_w32"))
    assert FeatureStore(tmp_path / "w.zarr").extractors()["swin_audio_w32"]["random_weights"] is False
