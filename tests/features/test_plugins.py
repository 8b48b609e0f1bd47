"""Plug-in extractors: a tiny package, pip-installed into a folder on the path of a child process,
registers itself through the ``fer_pipeline.extractors`` entry point group, appears in
``extract --help`` and runs in ``extract``.

The package is installed with ``pip install --target`` (no venv to create, no network, no build
isolation: the current interpreter's setuptools builds it), which writes the same ``.dist-info``
with ``entry_points.txt`` that a normal install writes; the child process sees it through
``PYTHONPATH``.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GROUP = "fer_pipeline.extractors"

PLUGIN = '''\
"""A user's own extractor: mean colour of each crop, registered on import."""
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.features.extractors.base import ArraySpec, ImageExtractor, register


@dataclass
class PluginMeanConfig:
    size: int = 4  # thumbnail side


@register
class PluginMean(ImageExtractor):
    name = "plugin_mean"
    Config = PluginMeanConfig
    has_weights = False

    def outputs(self):
        return {self.name: ArraySpec((3,))}

    def preprocess(self, image):
        small = image.convert("RGB").resize((self.config.size, self.config.size))
        return torch.from_numpy(np.asarray(small, dtype=np.float32) / 255).permute(2, 0, 1)

    def forward(self, batch):
        return {self.name: batch.mean(dim=(2, 3)).float()}
'''


def install_plugin(tmp_path: Path) -> Path:
    source = tmp_path / "plugin-src"
    (source / "fer_plugin_demo").mkdir(parents=True)
    (source / "fer_plugin_demo" / "__init__.py").write_text(PLUGIN)
    (source / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "fer-plugin-demo"
        version = "0.1"

        [project.entry-points."{GROUP}"]
        plugin_mean = "fer_plugin_demo"
        """))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(source)],
                   check=True, capture_output=True, text=True)
    return site


def run(site: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO)


@pytest.mark.slow
def test_an_installed_plugin_extractor_is_listed_and_runs(tmp_path):
    site = install_plugin(tmp_path)
    found = run(site, "-c", f"import importlib.metadata as m; "
                            f"print([e.value for e in m.entry_points(group={GROUP!r})])")
    assert "fer_plugin_demo" in found.stdout, found.stderr  # installed with its entry point
    listed = run(site, "-m", "cli.main", "extract", "--help")
    assert listed.returncode == 0, listed.stderr
    assert "plugin_mean" in listed.stdout
    sys.path.insert(0, str(REPO / "tests" / "stages"))
    from extract_fixtures import make_dataset

    manifests = make_dataset(tmp_path / "data", n_clips=1, n_frames=8, missing=())
    ran = run(site, "-m", "cli.main", "extract", "--manifests", str(manifests),
              "--store", str(tmp_path / "f.zarr"), "-e", "plugin_mean", "--device", "cpu")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "plugin_mean" in ran.stdout

