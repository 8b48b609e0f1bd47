"""Resumability: a run killed with SIGKILL (twice), or failing mid-way, then rerun, leaves exactly
the store an uninterrupted run writes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from extract_fixtures import TINY_LOGMEL, TINY_TDNN, make_dataset, store_arrays
from pipeline.features.store import FeatureStore
from pipeline.features.store_inspect import verify
from stages.extract import ExtractConfig, run_extract

HERE = str(Path(__file__).resolve().parent)
CONFIG = dict(extractors=["test_mean_colour", "logmel", "tdnn"], batch_size=4, audio_stride=2,
              device="cpu", configs={"tdnn": TINY_TDNN, "logmel": TINY_LOGMEL})

# The child runs the stage in-process; FER_TEST_DELAY slows each forward so it can be killed mid-way.
CHILD = """
import json, sys
sys.path.insert(0, sys.argv[1])
import extract_fixtures  # registers test_mean_colour
from stages.extract import ExtractConfig, run_extract
run_extract(ExtractConfig(**json.loads(sys.argv[2])), sys.argv[3], sys.argv[4])
"""


def _complete_clips(store: Path) -> int:
    """Clips whose valid array (written last) carries its completion marker, read from metadata."""
    count = 0
    for meta in store.glob("clips/*/valid/zarr.json"):
        try:
            count += "complete" in json.loads(meta.read_text()).get("attributes", {})
        except (OSError, ValueError):  # replaced while we read it
            pass
    return count


def _run_and_kill(manifests: Path, store: Path, after: int, timeout: float = 120) -> int:
    """Start a run in a subprocess, SIGKILL it once ``after`` clips are complete; return that count."""
    env = {**os.environ, "FER_TEST_DELAY": "0.15", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen([sys.executable, "-c", CHILD, HERE, json.dumps(CONFIG), str(manifests),
                              str(store)], env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while _complete_clips(store) < after:
            assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read()}"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    return _complete_clips(store)


@pytest.mark.slow
def test_sigkill_twice_then_rerun_equals_an_uninterrupted_run(tmp_path):
    manifests = make_dataset(tmp_path, n_clips=6, n_frames=16, audio=[True, True, False, True, True, True])
    clean = tmp_path / "clean.zarr"
    run_extract(ExtractConfig(**CONFIG), manifests, clean)

    store = tmp_path / "f.zarr"
    first = _run_and_kill(manifests, store, after=1)
    assert 1 <= first < 6, "killed too late to test anything"
    second = _run_and_kill(manifests, store, after=first + 2)
    assert first < second < 6

    result = run_extract(ExtractConfig(**CONFIG), manifests, store)
    assert result.clips_reused >= second and result.clips_done == 6 - result.clips_reused
    assert result.clips_by_other == 0  # the killed runs left no lock behind
    assert not list(verify(FeatureStore(store)))
    expected, actual = store_arrays(clean), store_arrays(store)
    assert actual.keys() == expected.keys()
    for key, data in expected.items():
        assert actual[key].dtype == data.dtype
        np.testing.assert_array_equal(actual[key], data, err_msg=str(key))


def test_a_run_that_fails_releases_its_locks_and_a_rerun_finishes_it(tmp_path, monkeypatch):
    manifests = make_dataset(tmp_path, n_clips=4, n_frames=16)
    clean = tmp_path / "clean.zarr"
    run_extract(ExtractConfig(**CONFIG), manifests, clean)
    store = tmp_path / "f.zarr"
    monkeypatch.setenv("FER_TEST_FAIL_AFTER", "0")
    with pytest.raises(RuntimeError, match="FER_TEST_FAIL_AFTER"):
        run_extract(ExtractConfig(**CONFIG), manifests, store)
    handle = FeatureStore(store)
    for clip_id in ("clip00", "clip01", "clip02", "clip03"):
        with handle.lock_clip(clip_id) as free:
            assert free, f"{clip_id} still locked after the failed run"
    monkeypatch.delenv("FER_TEST_FAIL_AFTER")
    result = run_extract(ExtractConfig(**CONFIG), manifests, store)
    assert result.ok and result.clips_done + result.clips_reused == 4
    expected = store_arrays(clean)
    assert all(np.array_equal(v, expected[k]) for k, v in store_arrays(store).items())
    assert store_arrays(store).keys() == expected.keys()
