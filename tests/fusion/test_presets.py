"""``fuse --preset`` refuses a store whose features were extracted with other settings than the
preset's paper needs (kim2023: Swin-Tiny on a plain 224 resize, the paper's log-mel images)."""

import pytest

from cli.main import main
from pipeline.errors import PipelineError
from pipeline.features.extractors import create
from pipeline.features.extractors.logmel import LogMelConfig
from pipeline.features.extractors.swin import SwinConfig
from pipeline.features.extractors.swin_audio import SwinAudioConfig
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config


def _store(path, random_weights=False, **configs):
    """A store whose root attributes record the extractors' own ``describe()``, as stage one does
    (as with a --weights file for each, unless ``random_weights``)."""
    store = FeatureStore(path, mode="a")
    described = {name: create(name, config=config).describe() for name, config in configs.items()}
    for record in described.values():
        record["random_weights"] = random_weights
    store.record_extractors(described)
    return path


def test_every_preset_refuses_random_backbones_in_one_line(tmp_path, capsys):
    store = _store(tmp_path / "r.zarr", random_weights=True, swin=SwinConfig(crop_pct=1.0),
                   swin_audio=SwinAudioConfig())
    # kim2023 names no "trained" extractor of its own: every random backbone it reads is refused,
    # all of them named in the one line, with the flag
    with pytest.raises(PipelineError, match=r"swin, swin_audio features come from random weights"
                                            r".*--weights swin=PATH --weights swin_audio=PATH"
                                            r".*--allow-random-weights"):
        build_config("mfm", store, tmp_path, preset="kim2023")
    # only what the run reads: the audio head reads no swin
    with pytest.raises(PipelineError, match=r": swin_audio features come from random"):
        build_config("audio", store, tmp_path, preset="kim2023")
    assert build_config("mfm", store, tmp_path, preset="kim2023",
                        allow_random_weights=True).head.image == "swin"
    build_config("mfm", store, tmp_path)  # no preset: no paper to hold the store to
    code = main(["fuse", "--method", "mfm", "--preset", "kim2023", "--store", str(store),
                 "--manifests", str(tmp_path), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        line for line in err.splitlines() if "--allow-random-weights" in line]


def test_kim2023_accepts_a_plain_224_resize(tmp_path):
    store = _store(tmp_path / "s.zarr", swin=SwinConfig(crop_pct=1.0), swin_audio=SwinAudioConfig())
    config = build_config("mfm", store, tmp_path, preset="kim2023")
    assert config.head.image == "swin"


def test_kim2023_refuses_timms_centre_crop(tmp_path):
    store = _store(tmp_path / "s.zarr", swin=SwinConfig(), swin_audio=SwinAudioConfig())
    with pytest.raises(PipelineError, match=r"swin was extracted with crop_pct=None, but preset "
                                            r"kim2023 needs 1\.0.*configs\.swin\.crop_pct=1\.0"):
        build_config("mfm", store, tmp_path, preset="kim2023")
    # Only the arrays the run reads are checked: a head that reads other image features passes.
    build_config("audio", store, tmp_path, preset="kim2023")
    # Without the preset nothing is checked.
    build_config("mfm", store, tmp_path)


def test_kim2023_refuses_another_papers_log_mel(tmp_path):
    audio = SwinAudioConfig(frontend=LogMelConfig(preset="jin2021"))
    store = _store(tmp_path / "s.zarr", swin=SwinConfig(crop_pct=1.0), swin_audio=audio)
    with pytest.raises(PipelineError, match="frontend.preset='jin2021'"):
        build_config("audio", store, tmp_path, preset="kim2023")
    # The paper's numbers given explicitly are the paper's settings too.
    explicit = SwinAudioConfig(frontend=LogMelConfig(n_fft=2048, hop_length=1024, n_mels=128))
    store = _store(tmp_path / "t.zarr", swin_audio=explicit)
    build_config("audio", store, tmp_path, preset="kim2023")


def test_fuse_command_refuses_in_one_line(tmp_path, capsys):
    store = _store(tmp_path / "s.zarr", swin=SwinConfig(crop_pct=0.9))
    code = main(["fuse", "--method", "mfm", "--preset", "kim2023", "--store", str(store),
                 "--manifests", str(tmp_path), "--out", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 1
    assert "crop_pct=0.9" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "runs").exists()


def test_jeong2022_needs_a_resnet50_map(tmp_path):
    from pipeline.features.extractors.timm_image import TimmImageConfig

    store = _store(tmp_path / "r18.zarr", timm=TimmImageConfig(model="resnet18", map=True))
    with pytest.raises(PipelineError, match=r"timm was extracted with model='resnet18'.*"
                                            r"configs\.timm\.model=resnet50"):
        build_config("dan", store, tmp_path, preset="jeong2022")
    store = _store(tmp_path / "r50.zarr", timm=TimmImageConfig(model="resnet50", map=True))
    config = build_config("dan", store, tmp_path, preset="jeong2022")
    assert config.head.image == "timm_map" and config.bag.k == 5
    # on Swin instead (the README's line): the timm record is not what the run reads
    build_config("dan", store, tmp_path, preset="jeong2022", sets=["head.image=swin_tokens"])


def _tdnn_store(path, random_weights: bool):
    store = FeatureStore(path, mode="a")
    described = create("tdnn").describe()
    described["random_weights"] = random_weights  # as extract records a --weights file or none
    store.record_extractors({"tdnn": described})
    return path


def test_jin2021_refuses_a_random_tdnn_unless_allowed(tmp_path):
    store = _tdnn_store(tmp_path / "random.zarr", random_weights=True)
    with pytest.raises(PipelineError, match="tdnn features come from random weights.*"
                                            "--allow-random-weights"):
        build_config("sequence", store, tmp_path, preset="jin2021")
    config = build_config("sequence", store, tmp_path, preset="jin2021", allow_random_weights=True)
    assert config.task.classes == 7
    build_config("sequence", store, tmp_path)  # no preset: no paper to hold the store to
    trained = _tdnn_store(tmp_path / "trained.zarr", random_weights=False)
    config = build_config("sequence", trained, tmp_path, preset="jin2021")
    # the paper's optimiser: SGD with momentum at 0.01, no weight decay or clipping stated
    assert (config.train.optimizer, config.train.lr, config.train.weight_decay,
            config.train.grad_clip) == ("sgd", 0.01, 0.0, 0.0)


def test_jin2021_cli_flag_allows_random_weights(tmp_path, capsys):
    store = _tdnn_store(tmp_path / "random.zarr", random_weights=True)
    args = ["fuse", "--method", "sequence", "--preset", "jin2021", "--store", str(store),
            "--manifests", str(tmp_path / "none"), "--out", str(tmp_path / "runs")]
    assert main(args) == 1
    assert "--allow-random-weights" in capsys.readouterr().err
    assert main([*args, "--allow-random-weights"]) == 1  # gets past the check: no manifests
    assert "random weights" not in capsys.readouterr().err


@pytest.mark.parametrize("preset,method,model", [
    ("jeong2022", "dan", "resnet18"), ("sun2026", "gated", "fer_demo_vit_small_patch14_dinov2"),
    ("yu2026", "xattn", "fer_demo_beit_small_patch16")])
def test_a_presets_stand_in_model_is_accepted_only_with_the_flag(preset, method, model, tmp_path):
    """A demo recipe's smaller model of the paper's family (ResNet-18 for ResNet-50, ...) is never
    accepted silently: only with allow_stand_ins (fuse --allow-stand-ins); other models not even
    then."""
    from pipeline.features.extractors.timm_image import TimmImageConfig

    store = _store(tmp_path / "s.zarr", timm=TimmImageConfig(model=model, map=True))
    with pytest.raises(PipelineError, match=f"timm was extracted with model='{model}'.*"
                                            "--allow-stand-ins"):
        build_config(method, store, tmp_path, preset=preset)
    config = build_config(method, store, tmp_path, preset=preset, allow_stand_ins=True)
    assert config.method == method
    other = _store(tmp_path / "o.zarr", timm=TimmImageConfig(model="test_vit", map=True))
    with pytest.raises(PipelineError, match="model='test_vit'") as refused:
        build_config(method, other, tmp_path, preset=preset, allow_stand_ins=True)
    assert "--allow-stand-ins" not in str(refused.value)
