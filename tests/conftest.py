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
