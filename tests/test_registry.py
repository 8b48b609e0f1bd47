"""The one registry helper (:mod:`pipeline.registry`) behind all five plug-in kinds: a class
registered from a test module is found by the kind's own lookup, a plug-in named by an entry
point is found without being imported until asked for, a taken name is refused in one line
naming both classes, and an unknown name gets the choices and a did-you-mean."""

from __future__ import annotations

import sys
import textwrap
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import pytest

from pipeline import registry as registry_module
from pipeline.data.faces.detectors import DETECTORS, Detector, detector_for
from pipeline.errors import PipelineError
from pipeline.features import extractors
from pipeline.features.extractors.base import EXTRACTORS, ImageExtractor
from pipeline.finetune.backbone_choice import BACKBONES, backbone_for
from pipeline.finetune.backbones import Backbone
from pipeline.fusion import heads
from pipeline.fusion.heads import HEADS, Head
from pipeline.registry import Registry
from pipeline.scoring import combiners
from pipeline.scoring.combiners import COMBINERS, Combiner


@dataclass(frozen=True)
class Kind:
    registry: Registry
    base: type
    base_import: str  # "module:Class" a plug-in module imports its base from
    register_import: str  # the module whose `register` it uses
    lookup: Callable[[str], type]  # the kind's own way to get a class by name
    built_in: str  # one built-in name


KINDS = {
    "extractor": Kind(EXTRACTORS, ImageExtractor, "pipeline.features.extractors.base:ImageExtractor",
                      "pipeline.features.extractors.base", extractors.extractor_class, "swin"),
    "head": Kind(HEADS, Head, "pipeline.fusion.heads:Head", "pipeline.fusion.heads",
                 heads.head_class, "mfm"),
    "combiner": Kind(COMBINERS, Combiner, "pipeline.scoring.combiners:Combiner",
                     "pipeline.scoring.combiners", combiners.combiner, "weighted"),
    "backbone": Kind(BACKBONES, Backbone, "pipeline.finetune.backbones:Backbone",
                     "pipeline.finetune.backbone_choice",
                     lambda name: type(backbone_for(SimpleNamespace(backbone=name))), "iresnet"),
    "detector": Kind(DETECTORS, Detector, "pipeline.data.faces.detectors:Detector",
                     "pipeline.data.faces.detectors",
                     lambda name: type(detector_for(SimpleNamespace(detector=name))), "mtcnn"),
}


def _subclass(kind: Kind, name: str, qualname: str) -> type:
    """A class of ``kind`` named ``name`` that its lookup can instantiate where it does."""
    namespace: dict[str, Any] = {"name": name, "order": 50, "__module__": __name__,
                                 "__qualname__": qualname}
    if kind.base is Detector:
        namespace["from_config"] = classmethod(lambda cls, config: cls())
    return type(qualname, (kind.base,), namespace)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_a_class_registered_from_a_test_module_is_found(kind):
    k = KINDS[kind]
    name = f"test_registry_{kind}"
    cls = k.registry.register(_subclass(k, name, "Registered"))
    try:
        assert name in k.registry.names() and name in k.registry.classes()
        assert k.lookup(name) is cls
        assert [row[0] for row in k.registry.rows([name])] == [name]  # what --describe lists
    finally:
        k.registry.unregister(name)
    assert name not in k.registry.names()


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_a_taken_name_is_refused_in_one_line_naming_both(kind):
    k = KINDS[kind]
    name = f"test_twice_{kind}"
    k.registry.register(_subclass(k, name, "First"))
    try:
        with pytest.raises(PipelineError) as caught:  # a one-line error, not a traceback
            k.registry.register(_subclass(k, name, "Second"))
        message = str(caught.value)
        assert "\n" not in message and "registered twice" in message
        assert f"{__name__}.First" in message and f"{__name__}.Second" in message
        # a built-in's name too (its module is imported, then the newcomer refused)
        built_in = k.registry.get(k.built_in)
        with pytest.raises(ValueError, match=f"{built_in.__module__}.{built_in.__qualname__}"):
            k.registry.register(_subclass(k, k.built_in, "Impostor"))
        assert k.registry.get(k.built_in) is built_in
    finally:
        k.registry.unregister(name)


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_an_unknown_name_lists_the_choices_and_the_closest(kind):
    k = KINDS[kind]
    misspelt = k.built_in[:-1] + "q"
    with pytest.raises(PipelineError) as caught:
        k.lookup(misspelt)
    message = str(caught.value)
    assert f"unknown {k.registry.kind} {misspelt!r}" in message and "\n" not in message
    assert f"did you mean {k.built_in}" in message and k.registry.choices() in message


@pytest.mark.parametrize("kind", KINDS, ids=str)
def test_a_plug_in_named_by_an_entry_point_is_found_and_imported_when_asked_for(
        kind, tmp_path, monkeypatch):
    k = KINDS[kind]
    name, module = f"plugged_{kind}", f"fer_test_plugged_{kind}"
    base_module, base = k.base_import.split(":")
    detector_part = ("\n    @classmethod\n    def from_config(cls, config):\n        return cls()\n"
                     if k.base is Detector else "")
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(f"""
        from {base_module} import {base}
        from {k.register_import} import register

        @register
        class Plugged({base}):
            \"\"\"A plug-in of the test.\"\"\"
            name = "{name}"
            order = 50
    """) + detector_part)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry_module, "entry_points",
                        lambda group: {name: module} if group == k.registry.group else {})
    try:
        assert name in k.registry.names() and module not in sys.modules  # listed, not imported
        cls = k.lookup(name)
        assert cls.__name__ == "Plugged" and cls.__module__ == module
        assert name in k.registry.classes() and k.registry.summary(name) == "A plug-in of the test."
    finally:
        k.registry.unregister(name)
        sys.modules.pop(module, None)


def test_every_kind_uses_the_one_helper_and_its_own_entry_point_group():
    from pipeline.features.extractors.iresnet import IResNetConfig
    from pipeline.features.extractors.swin import SwinConfig

    assert all(isinstance(k.registry, Registry) for k in KINDS.values())
    assert EXTRACTORS.config("swin") is SwinConfig and BACKBONES.config("iresnet") is IResNetConfig
    assert COMBINERS.config("mean") is None and HEADS.config("mfm") is heads.head_class("mfm").Config
    groups = [k.registry.group for k in KINDS.values()]
    assert groups == [f"fer_pipeline.{kind}s" for kind in KINDS]


def test_a_registered_class_without_a_literal_name_is_still_loaded(tmp_path):
    """``classes()`` imports every module with a registration, not only those whose names it
    could read from the source."""
    package = tmp_path / "fer_test_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "base.py").write_text(textwrap.dedent("""
        from pipeline.registry import Registry
        THINGS = Registry("thing", "fer_test_pkg", "fer_pipeline.test_things")
        register = THINGS.register
    """))
    (package / "computed.py").write_text(textwrap.dedent("""
        from fer_test_pkg.base import register

        @register
        class Computed:
            name = "comp" + "uted"
    """))
    sys.path.insert(0, str(tmp_path))
    try:
        from fer_test_pkg.base import THINGS

        assert THINGS.names() == []  # not readable from the source
        assert list(THINGS.classes()) == ["computed"] and THINGS.is_known("computed")
        with pytest.raises(KeyError, match="unknown thing 'nope'; choose from computed"):
            THINGS.get("nope")
    finally:
        sys.path.remove(str(tmp_path))
        for module in [m for m in sys.modules if m.startswith("fer_test_pkg")]:
            del sys.modules[module]


def test_a_detector_with_options_of_its_own_takes_them_from_the_faces_config():
    from pipeline import config as config_io
    from pipeline.data.faces.config import FacesConfig

    @dataclass
    class EveryConfig:
        step: int = 1  # detect on every step-th frame

    cls = type("WithOptions", (Detector,), {"name": "test_with_options", "Config": EveryConfig,
                                            "__module__": __name__})
    DETECTORS.register(cls)
    try:
        built = config_io.build(FacesConfig, sets=["detector=test_with_options", "options.step=3"])
        assert built.options == EveryConfig(3)
        assert built.output_key()["options"] == {"step": 3}  # another value redoes the videos
        assert FacesConfig(detector="test_with_options").options == EveryConfig()
        with pytest.raises(PipelineError, match=r"options \(detector test_with_options\).*stepp"):
            config_io.build(FacesConfig, sets=["detector=test_with_options", "options.stepp=3"])
        with pytest.raises(PipelineError, match="detector mtcnn has none"):
            FacesConfig(options={"step": 3})
        assert "options" not in FacesConfig().output_key()  # the built-ins' keys as before
    finally:
        DETECTORS.unregister("test_with_options")
