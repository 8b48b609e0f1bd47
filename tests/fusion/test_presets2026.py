"""The ABAW10 presets: ``sun2026`` (gated fusion) and ``yu2026`` (safe cross-attention) set what
their papers state, apply to their heads only, and check the stored face backbone."""

import pytest

from pipeline.errors import PipelineError
from pipeline.features.extractors import create
from pipeline.features.extractors.timm_image import TimmImageConfig
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config


def _store(path, model, random_weights=False):
    store = FeatureStore(path, mode="a")
    described = create("timm", config=TimmImageConfig(model=model)).describe()
    described["random_weights"] = random_weights  # as extract records a --weights file or none
    store.record_extractors({"timm": described})
    return path


def test_the_2026_presets_refuse_a_random_face_backbone(tmp_path):
    dino = _store(tmp_path / "d.zarr", "vit_large_patch14_dinov2.lvd142m", random_weights=True)
    with pytest.raises(PipelineError, match="timm features come from random weights.*"
                                            "--allow-random-weights"):
        build_config("gated", dino, tmp_path, preset="sun2026")
    build_config("gated", dino, tmp_path, preset="sun2026", allow_random_weights=True)


def test_sun2026_sets_the_gated_fusion_of_dinov2_and_wav2vec2(tmp_path):
    config = build_config("gated", tmp_path / "none.zarr", tmp_path, preset="sun2026")
    assert config.head.images == ("timm",) and config.head.audio == ("hf_audio_w32",)
    assert config.head.gate == "sigmoid"
    with pytest.raises(PipelineError, match="not xattn"):
        build_config("xattn", tmp_path / "none.zarr", tmp_path, preset="sun2026")


def test_yu2026_sets_modality_dropout_focal_loss_and_voting(tmp_path):
    config = build_config("xattn", tmp_path / "none.zarr", tmp_path, preset="yu2026")
    assert config.head.modality_dropout == 0.2 and config.head.voting == "uniform"
    assert config.loss.kind == "focal" and config.loss.gamma == 2.0
    # a --set still overrides the preset
    config = build_config("xattn", tmp_path / "none.zarr", tmp_path, preset="yu2026",
                          sets=["head.modality_dropout=0.0"])
    assert config.head.modality_dropout == 0.0


def test_presets_check_the_face_backbone(tmp_path):
    dino = _store(tmp_path / "d.zarr", "vit_large_patch14_dinov2.lvd142m")
    build_config("gated", dino, tmp_path, preset="sun2026")
    with pytest.raises(PipelineError, match="preset yu2026 needs 'beit_large"):
        build_config("xattn", dino, tmp_path, preset="yu2026")
