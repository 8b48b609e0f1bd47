"""Extractor discovery: cheap to import (no timm), names read from the sources, modules imported on
demand, and plug-in extractors and heads found through entry points of installed packages."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipeline.features import extractors
from pipeline.registry import registered_names

ROOT = Path(__file__).resolve().parents[2]
BUILT_IN = {"swin", "iresnet", "logmel", "tdnn", "swin_audio"}


def run_python(code: str, *paths: Path) -> dict:
    """Run ``code`` in a fresh interpreter (repo and ``paths`` on sys.path); return its JSON output."""
    env_path = ":".join(str(p) for p in (ROOT, *paths))
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                         env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"}, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_registry_imports_no_backbone_library():
    got = run_python("""
        import json, sys
        import pipeline.features.extractors as x
        names = x.names()
        tdnn = x.create("tdnn").name
        print(json.dumps({"names": names, "timm": "timm" in sys.modules, "tdnn": tdnn}))
    """)
    assert BUILT_IN <= set(got["names"])
    assert got["tdnn"] == "tdnn" and not got["timm"]  # creating tdnn imports its module only


def test_names_read_from_the_sources_are_the_registered_classes():
    index = {n: m for n, m in extractors.EXTRACTORS.modules().items() if m.startswith("pipeline.")}
    registered = extractors.registry()
    assert BUILT_IN <= set(index)
    for name, module in index.items():
        assert registered[name].__module__ == module
    with pytest.raises(KeyError, match="unknown extractor 'nope'"):
        extractors.create("nope")


def test_registered_names_are_read_without_importing():
    source = textwrap.dedent('''
        @register
        class A(Base):
            """Doc."""
            name = "a_one"
        class NotRegistered(Base):
            name = "hidden"
        @other.register
        class B(Base):
            name: ClassVar[str] = "b_two"
    ''')
    assert registered_names(source) == ["a_one", "b_two"]


def test_plug_ins_are_found_through_entry_points(tmp_path):
    """A fake installed package (a dist-info with entry_points.txt) adds an extractor and a head."""
    dist = tmp_path / "fer_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fer-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[fer_pipeline.extractors]\nplugin_colour = fer_plugin_extractor\n\n"
        "[fer_pipeline.heads]\nplugin_head = fer_plugin_head\n")
    (tmp_path / "fer_plugin_extractor.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from pipeline.features.extractors.base import ArraySpec, ImageExtractor, register

        @dataclass
        class Config:
            pass

        @register
        class PluginColour(ImageExtractor):
            name = "plugin_colour"
            Config = Config
            def outputs(self):
                return {self.name: ArraySpec((3,))}
            def preprocess(self, image):
                raise NotImplementedError
            def forward(self, batch):
                raise NotImplementedError
    """))
    (tmp_path / "fer_plugin_head.py").write_text(textwrap.dedent("""
        from pipeline.fusion.heads import registry, register
        base = registry()["image"]

        @register
        class PluginHead(base):
            name = "plugin_head"
    """))
    got = run_python("""
        import json, sys
        import pipeline.features.extractors as x
        names = x.names()
        before = "fer_plugin_extractor" in sys.modules
        cls = x.create("plugin_colour").__class__.__name__
        from pipeline.fusion.heads import registry
        print(json.dumps({"names": names, "before": before, "cls": cls, "heads": sorted(registry())}))
    """, tmp_path)
    assert "plugin_colour" in got["names"] and not got["before"]
    assert got["cls"] == "PluginColour" and "plugin_head" in got["heads"]
