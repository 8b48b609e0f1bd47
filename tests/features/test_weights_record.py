"""The weights folder of ``fer-pipeline finetune``: extractors load it unchanged, apply the recorded
preprocessing themselves, refuse a record that does not vouch for its weights; tdnn's cepstral mean
normalisation follows the weights (none for random ones)."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import timm  # noqa: E402
import timm.data  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.extractors import create  # noqa: E402
from pipeline.features.extractors.logmel import LogMelConfig  # noqa: E402
from pipeline.features.extractors.tdnn import TdnnConfig, XVector, sliding_cmn  # noqa: E402
from pipeline.features.extractors.timm_image import TimmImageConfig  # noqa: E402
from pipeline.features.weights_record import (  # noqa: E402
    RECORD_NAME,
    WEIGHTS_NAME,
    WeightsRecord,
    read_record,
    write_weights_folder,
)
from tests.features.test_timm_image import images, reference_model, timm_features  # noqa: E402

TINY_TDNN = TdnnConfig(windows=(4,), channels=(16, 16, 16, 16, 24), embedding_dim=8)


def full_preprocessing(family: str, model: str, preprocessing: dict) -> dict:
    """``preprocessing`` completed with the model's own values (a record holds every key of its
    family: pipeline.features.weights_schema)."""
    if family == "timm":
        d = timm.data.resolve_model_data_config(timm.create_model(model, pretrained=False))
        base = {"input_size": list(d["input_size"]), "mean": list(d["mean"]),
                "std": list(d["std"]), "crop_pct": d["crop_pct"], "interpolation": d["interpolation"]}
    else:
        base = {"window": 4}
    return {**base, **preprocessing}


def record(family: str, model: str, preprocessing: dict) -> WeightsRecord:
    preprocessing = full_preprocessing(family, model, preprocessing)
    return WeightsRecord(family=family, model=model, preprocessing=preprocessing, weights_sha256="",
                         manifest_fingerprint="f" * 64, clips={"train": ["a"], "dev": ["b"]},
                         config={}, selected_on="train-dev", selection_score=0.5, epoch=1,
                         epochs_run=1, initial_weights=None, initial_weights_sha256=None)


def test_timm_loads_the_folder_and_applies_its_normalisation(tmp_path):
    model = reference_model("test_resnet", seed=3)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    folder = write_weights_folder(tmp_path / "ft", model.state_dict(),
                                  record("timm", "test_resnet", {"mean": mean, "std": std}))
    ext = create("timm", config=TimmImageConfig(model="test_resnet"), weights=folder)
    assert ext.weights_record.preprocessing["mean"] == list(mean)
    assert tuple(ext.data_config["mean"]) == mean and tuple(ext.data_config["std"]) == std
    imgs = images(3, size=96)
    # The reference: timm's own eval transform with the recorded statistics, timm's own forward.
    data = {**timm.data.resolve_model_data_config(model), "mean": mean, "std": std}
    transform = timm.data.create_transform(**data, is_training=False)
    x = torch.stack([transform(i) for i in imgs])
    expected, _ = timm_features(model, x)
    got = ext.forward(torch.stack([ext.preprocess(i) for i in imgs]))["timm"]
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)
    # An explicit option still wins over the record.
    ext2 = create("timm", config=TimmImageConfig(model="test_resnet", mean=(0.1, 0.1, 0.1)),
                  weights=folder)
    assert tuple(ext2.data_config["mean"]) == (0.1, 0.1, 0.1)
    assert tuple(ext2.data_config["std"]) == std


def test_record_enters_the_cache_key_and_is_verified(tmp_path):
    model = reference_model("test_resnet", seed=3)
    a = write_weights_folder(tmp_path / "a", model.state_dict(), record("timm", "test_resnet", {}))
    b = write_weights_folder(tmp_path / "b", model.state_dict(),
                             record("timm", "test_resnet", {"mean": (0.4, 0.4, 0.4)}))
    config = TimmImageConfig(model="test_resnet")
    assert create("timm", config=config, weights=a).cache_key != create("timm", config=config,
                                                                        weights=b).cache_key
    # Weights replaced after the record was written: refused in one line naming the file.
    torch.manual_seed(0)
    other = timm.create_model("test_resnet", num_classes=0).state_dict()
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in other.items()}, str(a / WEIGHTS_NAME))
    with pytest.raises(PipelineError, match="sha256 differs"):
        create("timm", config=config, weights=a)
    # Another model's record.
    with pytest.raises(PipelineError, match="records timm weights of model 'test_resnet', but this "
                                            "command asked for timm model 'test_vit'"):
        create("timm", config=TimmImageConfig(model="test_vit"), weights=b)
    (b / RECORD_NAME).write_text(json.dumps({"family": "timm"}))
    with pytest.raises(PipelineError, match="missing"):
        read_record(b)


def test_swin_reads_the_record_too(tmp_path):
    from pipeline.features.extractors.swin import SwinConfig

    model = reference_model("test_vit", seed=1)
    folder = write_weights_folder(tmp_path / "ft", model.state_dict(),
                                  record("timm", "test_vit", {"crop_pct": 1.0}))
    ext = create("swin", config=SwinConfig(model="test_vit"), weights=folder)
    assert ext.data_config["crop_pct"] == 1.0


def _tdnn_input(n: int = 400, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 64)) + np.linspace(0, 30, 64)).astype(np.float32)


def test_tdnn_mean_norm_follows_the_weights(tmp_path):
    mel = _tdnn_input()
    # Random weights: nothing is normalised.
    random = create("tdnn", config=TINY_TDNN)
    assert random.config.mean_norm == "none"
    frontend = LogMelConfig(preset="jin2021")
    random._frontend = None
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(type(random.frontend), "compute", lambda self, w: mel)
        np.testing.assert_array_equal(random.compute_frontend(np.zeros(10, np.float32)), mel)
        # A fine-tuned folder that records sliding CMN over 1 s: applied without any option.
        c = TINY_TDNN
        torch.manual_seed(0)
        net = XVector(64, c.channels, c.kernels, c.dilations, c.embedding_dim)
        folder = write_weights_folder(
            tmp_path / "ft", net.state_dict(),
            record("tdnn", "xvector", {"mean_norm": "sliding", "cmn_seconds": 1.0,
                                       "frontend": dataclasses.asdict(frontend)}))
        trained = create("tdnn", config=TINY_TDNN, weights=folder)
        assert (trained.config.mean_norm, trained.config.cmn_seconds) == ("sliding", 1.0)
        np.testing.assert_allclose(trained.compute_frontend(np.zeros(10, np.float32)),
                                   sliding_cmn(mel, 200), atol=1e-5)
        assert trained.cache_key != create("tdnn", config=dataclasses.replace(
            TINY_TDNN, mean_norm="none"), weights=folder).cache_key
    # A plain weights file without a record: the x-vector recipe's sliding CMN, as before.
    torch.save(net.state_dict(), tmp_path / "x.pt")
    assert create("tdnn", config=TINY_TDNN, weights=tmp_path / "x.pt").config.mean_norm == "sliding"
    # A frontend the network did not learn on is refused.
    other = dataclasses.replace(TINY_TDNN, frontend=LogMelConfig(preset="jin2021", n_mels=40))
    with pytest.raises(PipelineError, match="trained on log-mel"):
        create("tdnn", config=other, weights=folder)


def test_dan_heads_beside_the_backbone_are_recorded_and_verified(tmp_path):
    """A head=dan folder records its DAN heads' sha256 and is refused when they are missing,
    changed or unrecorded; a folder without heads keeps the record of before (no such key)."""
    import hashlib

    from pipeline.features.weights_record import DAN_HEADS_NAME, read_dan_heads

    state = {"w": torch.ones(2, 2)}
    plain = write_weights_folder(tmp_path / "plain", state, record("timm", "test_resnet", {}))
    assert "dan_heads_sha256" not in json.loads((plain / "finetune.json").read_text())
    with pytest.raises(PipelineError, match="holds no DAN heads"):
        read_dan_heads(plain)
    heads = {"centres": torch.arange(6.0).reshape(2, 3)}
    folder = write_weights_folder(tmp_path / "dan", state, record("timm", "test_resnet", {}),
                                  dan_heads=heads)
    data = json.loads((folder / "finetune.json").read_text())
    assert data["dan_heads_sha256"] == hashlib.sha256(
        (folder / DAN_HEADS_NAME).read_bytes()).hexdigest()
    torch.testing.assert_close(read_dan_heads(folder)["centres"], heads["centres"])
    (folder / DAN_HEADS_NAME).write_bytes((folder / DAN_HEADS_NAME).read_bytes() + b" ")
    with pytest.raises(PipelineError, match="dan_heads.safetensors: its sha256 differs"):
        read_record(folder)
    (folder / DAN_HEADS_NAME).unlink()
    with pytest.raises(PipelineError, match="records DAN heads but there is no"):
        read_record(folder)
    (plain / DAN_HEADS_NAME).write_bytes(b"x")
    with pytest.raises(PipelineError, match="not recorded in finetune.json"):
        read_record(plain)
    with pytest.raises(PipelineError, match="no such weights folder"):
        read_dan_heads(tmp_path / "absent")
