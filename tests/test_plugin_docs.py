"""docs/plugins.md's face detector and fine-tune backbone work as written: each section's module,
copied out of the page and named by its entry point (the page's TOML block, served by a stand-in
for the installed packages' entry points), is found by name and runs: the detector crops a video
with ``faces``, the backbone fine-tunes for an epoch with ``finetune`` and writes a timm weights
folder."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline import registry

REPO = Path(__file__).resolve().parents[1]


def _section(heading: str) -> tuple[str, str]:
    """(TOML block, Python block) of the plug-in page's section ``## heading``."""
    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text[text.index(f"## {heading}\n"):]
    section = section[:section.find("\n## ", 1) if "\n## " in section[1:] else len(section)]
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return toml, python


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """Install a section's plug-in: its module under ``tmp_path`` and its entry point; returns
    the plug-in's name."""
    added: list[str] = []
    served: dict[str, dict[str, str]] = {}

    def install(heading: str) -> str:
        toml, python = _section(heading)
        groups = tomllib.loads(toml)["project"]["entry-points"]
        ((group, points),) = groups.items()
        ((name, module),) = points.items()
        relative = python.splitlines()[0].lstrip("# ").strip()  # "# my_package/x.py"
        assert relative.replace("/", ".").removesuffix(".py") == module
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        (path.parent / "__init__.py").write_text("")
        path.write_text(python)
        served[group] = {name: module}
        added.append(module)
        return name

    monkeypatch.syspath_prepend(str(tmp_path))
    real = registry.entry_points
    monkeypatch.setattr(registry, "entry_points", lambda group: served.get(group) or real(group))
    yield install
    from pipeline.data.faces.detectors import DETECTORS
    from pipeline.finetune.backbone_choice import BACKBONES

    for module in added:
        for kind in (DETECTORS, BACKBONES):
            for name, cls in kind.classes().items():
                if cls.__module__ == module:
                    kind.unregister(name)
        for loaded in [m for m in sys.modules if m == module or m.startswith("my_package")]:
            del sys.modules[loaded]


def test_the_documented_detector_crops_a_video(installed, tmp_path):
    from pipeline.data.faces.config import FacesConfig
    from pipeline.data.faces.synthetic import moving_face
    from pipeline.data.media import write_video
    from stages.faces import run_faces

    name = installed("Adding a face detector")
    video = moving_face(n_frames=6)
    write_video(tmp_path / "v.mp4", video.frames, 10.0)
    result = run_faces([tmp_path / "v.mp4"], tmp_path / "out", FacesConfig(detector=name))
    ((outcome),) = result.outcomes
    record = json.loads((tmp_path / "out" / "faces" / "v.json").read_text())
    assert outcome.status == "done" and record["key"]["weights"] == "none"
    # every frame of the track (shot cuts the synthetic video has aside) is cropped, whole
    assert outcome.clips["v"] == sum(t["frames"] for t in record["tracks"] if t["clip"] == "v") >= 4
    quality = np.load(tmp_path / "out" / "faces" / "v.npz")
    assert quality["face"].sum() == outcome.clips["v"]
    assert np.allclose(quality["box"][quality["face"]], [0, 0, 320, 240])
    crops = list((tmp_path / "out" / "cropped_aligned" / "v").glob("*.jpg"))
    assert len(crops) == outcome.clips["v"]


def test_the_documented_backbone_fine_tunes(installed, tmp_path):
    from cli.main import main
    from pipeline.data.dataset import read_dataset
    from pipeline.data.manifest import load_clips, write_manifests
    from pipeline.data.synthetic import DemoConfig, generate
    from pipeline.features.weights_record import read_record
    from pipeline.finetune.backbone_choice import backbone_for
    from pipeline.finetune.backbones import FaceBackbone
    from pipeline.finetune.config import build_config

    name = installed("Adding a fine-tune backbone")
    generate(tmp_path / "data", DemoConfig(clips=8, frames=20, seed=0, size=32))
    manifests = tmp_path / "manifests"
    write_manifests(read_dataset(tmp_path / "data"), manifests)

    config = build_config(manifests, backbone=name, sets=["model=test_resnet"])
    grey, plain = backbone_for(config), FaceBackbone(config)
    samples = grey.samples(load_clips(manifests, ["train"]))
    assert len(samples) > 0
    drawn = grey.tensor(samples, 0, seed=10)
    assert torch.equal(drawn[0], drawn[1]) and torch.equal(drawn[1], drawn[2])  # every fifth: grey
    assert torch.equal(grey.tensor(samples, 0, seed=11), plain.tensor(samples, 0, seed=11))
    assert torch.equal(grey.tensor(samples, 0, seed=None), plain.tensor(samples, 0, seed=None))

    out = tmp_path / "W"
    # its declared layer order and input size: lr_decay and input_size are accepted and used
    assert main(["finetune", "--manifests", str(manifests), "--backbone", name, "--out", str(out),
                 "--set", "model=test_resnet", "--set", "epochs=1", "--set", "batch_size=16",
                 "--set", "lr_decay=0.75", "--set", "input_size=40"]) == 0
    record = read_record(out)
    assert record.family == "timm"  # stage one loads it as any timm folder
    assert record.config["lr_decay"] == 0.75 and record.preprocessing["input_size"] == [3, 40, 40]
