"""Stage three says which precision its members' features were extracted in (issue 25)."""

import json
from pathlib import Path

from pipeline.features.extractors import create
from pipeline.features.store import FeatureStore
from pipeline.features.store_format import array_key
from pipeline.runs.record import RunRecord, read_record
from stages.precision import feature_precision


def _store(path: Path, precisions: dict[str, str]) -> Path:
    """A store whose root attributes describe extractors of the given precisions."""
    store = FeatureStore(path, "a")
    store.record_extractors({name: {"name": name, "cache_key": f"key-of-{name}",
                                    "precision": precision}
                             for name, precision in precisions.items()})
    return path


def _run(root: Path, name: str, store: Path, features: dict) -> tuple[Path, RunRecord]:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(f'method = "fake"\nstore = "{store}"\n')
    metrics = {"outputs": ["main"], "features": features}
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run, read_record(run)


def test_precision_is_read_from_the_runs_stores(tmp_path):
    store = _store(tmp_path / "a.zarr", {"swin": "bf16", "tdnn": "fp32"})
    image = _run(tmp_path, "image", store, {"valid": "valid-1", "swin": "key-of-swin"})
    audio = _run(tmp_path, "audio", store, {"valid": "valid-1",
                                             "tdnn_w32": "key-of-tdnn-stride1"})
    assert feature_precision([image[0]], [image[1]]) == "bf16"
    assert feature_precision([audio[0]], [audio[1]]) == "fp32"
    assert feature_precision(*zip(image, audio)) == "bf16 + fp32"


def test_an_unreadable_store_makes_it_unknown_with_the_reason(tmp_path):
    gone = _run(tmp_path, "gone", tmp_path / "missing.zarr", {"swin": "k"})
    assert feature_precision([gone[0]], [gone[1]]).startswith("unknown (gone: ")
    store = _store(tmp_path / "b.zarr", {"swin": "bf16"})
    other = _run(tmp_path, "other", store, {"swin": "another-key"})
    assert "no extractor" in feature_precision([other[0]], [other[1]])
    assert feature_precision([other[0]], [RunRecord(outputs=("main",))]) == (
        "unknown (other: its metrics.json lists no features)")


def test_an_extractors_own_description_and_array_key_give_its_precision(tmp_path):
    # what extraction writes: the extractor's describe() at the root, its arrays' keys in runs
    logmel = create("logmel", precision="bf16")
    FeatureStore(tmp_path / "c.zarr", "a").record_extractors({"logmel": logmel.describe()})
    key = array_key(logmel.cache_key, audio_stride=1)
    run = _run(tmp_path, "run", tmp_path / "c.zarr", {"valid": "valid-1", "logmel": key})
    assert feature_precision([run[0]], [run[1]]) == "bf16"
