"""A tiny demo dataset and its manifests, shared by the fine-tuning tests (module-scoped)."""

import pytest

from pipeline.data.dataset import read_dataset
from pipeline.data.manifest import write_manifests
from pipeline.data.synthetic import DemoConfig, generate


@pytest.fixture(scope="session")
def demo_manifests(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft_demo")
    generate(root / "data", DemoConfig(clips=8, frames=30, seed=0, size=32))
    out = root / "manifests"
    write_manifests(read_dataset(root / "data"), out)
    return out
