"""Same command, same bytes: two extractions with 4 loader threads store identical arrays, for every
registered extractor that runs here (random weights, the smallest configs).

Models used to be built lazily by whichever loader thread asked first, and concurrent builds
reseeded the shared torch generator under each other (issue 23, point 1). A short thread switch
interval makes such interleavings likely, so the old code fails this test reliably.
"""

import importlib.util
import sys

import numpy as np
import pytest

from extract_fixtures import make_dataset, store_arrays
from pipeline.features import runner
from pipeline.features.extractors import registry
from stages.extract import ExtractConfig, run_extract

SMALL = {  # the smallest config of each (the default where not listed)
    "swin": {"model": "test_vit"},
    "timm": {"model": "test_resnet"},
    "iresnet": {"depth": 18},
    "logmel": {"n_fft": 512, "hop_length": 256, "n_mels": 16},
    "tdnn": {"windows": [4, 8]},  # default widths: a build long enough for threads to overlap
    "swin_audio": {"windows": [4], "model": "test_vit"},
    "swin_audio_w32": {"model": "test_vit"},  # w48 and w64: the same class, another window
    "hf_audio": {"windows": [4]},
    "ecapa": {"windows": [4]},
    "xvector": {"windows": [4]},
    "egemaps": {"windows": [4]},
}
NEEDS = {"ecapa": "speechbrain", "xvector": "speechbrain", "egemaps": "opensmile"}


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("determinism"), n_clips=6, n_frames=8, fps=10.0)


def _extract(name: str, manifests, store, monkeypatch) -> dict:
    # A fresh process each time as far as models go: no model cached from the run before.
    monkeypatch.setattr(runner, "_LOADED", {})
    config = ExtractConfig(extractors=[name], configs={name: dict(SMALL.get(name, {}))},
                           batch_size=4, audio_stride=2, loader_threads=4, device="cpu",
                           precision="fp32", scheduler="inprocess")
    result = run_extract(config, manifests, store)
    assert result.ok and result.clips_done == 6, result.skipped
    return store_arrays(store)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(n for n in registry() if n in SMALL))
def test_two_runs_with_loader_threads_store_the_same_bytes(name, manifests, tmp_path, monkeypatch):
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{NEEDS[name]} is not installed")
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often: overlapping model builds become likely
    try:
        first = _extract(name, manifests, tmp_path / "a.zarr", monkeypatch)
        second = _extract(name, manifests, tmp_path / "b.zarr", monkeypatch)
    finally:
        sys.setswitchinterval(interval)
    assert set(first) == set(second) and any(array != "valid" for _, array in first)
    differ = [key for key in first if first[key].tobytes() != second[key].tobytes()]
    assert not differ, f"{len(differ)}/{len(first)} arrays differ, e.g. {differ[0]}"
    for key, value in first.items():
        assert np.isfinite(value.astype(np.float32)).all(), key


def test_every_extractor_with_weights_is_covered():
    # A new extractor must join the determinism sweep (onnx and audio_model need a model file:
    # no random build).
    assert set(registry()) - {"onnx", "audio_model", "swin_audio_w48", "swin_audio_w64"} <= set(SMALL) | {n for n in registry() if n.startswith("test_")}
