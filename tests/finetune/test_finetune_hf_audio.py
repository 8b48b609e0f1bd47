"""``fer-pipeline finetune --backbone hf_audio``: the top ``train_layers`` of a tiny Wav2Vec2 built
here (transformers' own classes) train on waveform windows; every other parameter stays as it was;
the folder loads in ``extract -e hf_audio`` and gives transformers' forward of the saved model;
validation labels never matter."""

import numpy as np
import pytest
import torch

from pipeline.compat import ensure_torchvision

ensure_torchvision()

from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model  # noqa: E402

from pipeline.data.manifest import iter_manifest  # noqa: E402
from pipeline.data.media import decode_audio  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.audio_windows import frame_windows  # noqa: E402
from pipeline.features.config import ExtractConfig  # noqa: E402
from pipeline.features.store import FeatureStore  # noqa: E402
from pipeline.features.weights_record import WEIGHTS_NAME, read_record  # noqa: E402
from pipeline.finetune.config import build_config  # noqa: E402
from pipeline.finetune.loop import work_dir  # noqa: E402
from stages.extract import run_extract  # noqa: E402
from stages.finetune import finetune  # noqa: E402
from tests.finetune.test_finetune_timm import _poisoned  # noqa: E402

pytestmark = pytest.mark.slow  # fine-tunes and an extraction


@pytest.fixture(scope="module")
def initial(tmp_path_factory):
    folder = tmp_path_factory.mktemp("w2v") / "tiny"
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16, 16), conv_stride=(5, 4, 4), conv_kernel=(10, 4, 4),
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(folder)
    return folder


def _sets(initial):
    return ["backbone=hf_audio", f"weights={initial}", "train_layers=1", "epochs=2",
            "batch_size=8", "lr=1e-3", "sampling.interval=2"]


@pytest.fixture(scope="module")
def tuned(initial, demo_manifests, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "hf_audio"
    return out, finetune(build_config(demo_manifests, sets=_sets(initial)), out)


def test_only_the_top_layers_change(tuned, initial):
    out, _ = tuned
    before = Wav2Vec2Model.from_pretrained(initial).state_dict()
    after = Wav2Vec2Model.from_pretrained(out).state_dict()
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("encoder.layers.2.") for k in changed), sorted(changed)[:5]
    # SpecAugment is off only while training: the saved config keeps the initial setting.
    assert Wav2Vec2Model.from_pretrained(out).config.apply_spec_augment is True


def test_hf_audio_folder_loads_in_extract_and_equals_the_trained_forward(tuned, demo_manifests,
                                                                         tmp_path):
    out, _ = tuned
    record = read_record(out)
    assert (record.family, record.model) == ("hf_audio", "wav2vec2")
    assert record.preprocessing["train_layers"] == 1 and record.preprocessing["window"] == 32
    # The folder holds what the loop kept for its best epoch.
    best = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)["best_state"]
    saved = Wav2Vec2Model.from_pretrained(out)
    assert all(torch.equal(saved.state_dict()[k[len("model."):]], v) for k, v in best.items())
    config = ExtractConfig(extractors=["hf_audio"], configs={"hf_audio": {"windows": [32]}},
                           weights={"hf_audio": str(out)}, device="cpu", precision="fp32",
                           batch_size=8, audio_stride=1, splits=["train"])
    run_extract(config, demo_manifests, tmp_path / "f.zarr")
    clip = next(c for c in iter_manifest(demo_manifests / "train.jsonl") if c.audio_path)
    got = FeatureStore(tmp_path / "f.zarr").read(clip.clip_id, "hf_audio_w32").astype(np.float32)
    # transformers' feature extractor and forward over the clip (shorter than one chunk), the
    # last hidden state averaged over each frame's window.
    wave = decode_audio(clip.audio_path, 16000)
    inputs = Wav2Vec2FeatureExtractor.from_pretrained(out)(wave, sampling_rate=16000,
                                                           return_tensors="pt")
    with torch.no_grad():
        states = saved.eval()(inputs.input_values).last_hidden_state[0].numpy()
    expected = frame_windows(states, 16000 / 80, clip.n_frames, clip.fps, 32, pad="edge").mean(1)
    np.testing.assert_allclose(got, expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())


def test_hf_audio_poisoned_validation_labels_give_identical_weights(tuned, initial, demo_manifests,
                                                                   tmp_path):
    out, _ = tuned
    again = tmp_path / "again"
    finetune(build_config(_poisoned(demo_manifests, tmp_path), sets=_sets(initial)), again)
    assert (again / WEIGHTS_NAME).read_bytes() == (out / WEIGHTS_NAME).read_bytes()


def test_train_layers_beyond_the_model_is_refused(initial, demo_manifests, tmp_path):
    with pytest.raises(PipelineError, match="train_layers 4: this model has 3"):
        finetune(build_config(demo_manifests, sets=[*_sets(initial), "train_layers=4"]),
                 tmp_path / "w")


def test_hf_audio_under_torchrun_two_processes(initial, demo_manifests, tmp_path):
    # Frozen lower layers and the trained top one under DDP (gloo, CPU); layer drop is off while
    # training, so every trained parameter gets a gradient at every step (DDP requires it).
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "cli.main", "finetune", "--manifests", str(demo_manifests), "--out", str(out)]
    for item in _sets(initial):
        args += ["--set", item]
    done = subprocess.run(args, cwd=root, env=env, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "extract -e hf_audio --weights hf_audio=" in done.stdout
    assert read_record(out).family == "hf_audio"
    assert Wav2Vec2Model.from_pretrained(out).config.layerdrop == Wav2Vec2Config().layerdrop


def test_hf_audio_killed_after_an_epoch_and_rerun_writes_the_uninterrupted_weights(
        tuned, initial, demo_manifests, tmp_path):
    # The transformer's dropout draws and the save_pretrained path resume like timm's
    # (tests/finetune/test_finetune_resume.py).
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "cli.main", "finetune", "--manifests", str(demo_manifests),
            "--out", str(out)]
    for item in _sets(initial):
        args += ["--set", item]
    proc = subprocess.Popen(args, cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (work_dir(out) / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert not (out / WEIGHTS_NAME).exists()
    done = subprocess.run(args, cwd=root, env=env, text=True, capture_output=True, timeout=600)
    assert done.returncode == 0 and "resumed after epoch 1" in done.stdout, done.stderr[-2000:]
    assert (out / WEIGHTS_NAME).read_bytes() == (tuned[0] / WEIGHTS_NAME).read_bytes()
