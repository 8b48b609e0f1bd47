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


def _store(path, **configs):
    """A store whose root attributes record the extractors' own ``describe()``, as stage one does."""
    store = FeatureStore(path, mode="a")
    store.record_extractors({name: create(name, config=config).describe()
                             for name, config in configs.items()})
    return path


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
