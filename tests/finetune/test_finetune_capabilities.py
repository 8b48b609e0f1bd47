"""What a fine-tune backbone supports is declared by its class (``supports_input_size``,
``supports_dan_head``, ``layer_order``) and checked from there, not from built-in names: a
plug-in that declares ``lr_decay`` support passes validation and trains with decayed rates, one
that does not is refused in the same one line; a built-in's declarations are read from its source
without importing it."""

import pytest
import torch

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import timm  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.finetune.backbone_choice import BACKBONES  # noqa: E402
from pipeline.finetune.backbones import AudioBackbone, FaceBackbone  # noqa: E402
from pipeline.finetune.config import FinetuneConfig  # noqa: E402
from pipeline.finetune.model import Classifier, make_optimizer  # noqa: E402


class Ordered(AudioBackbone):
    """A plug-in over a timm network that declares its depth order (and nothing else)."""

    name = "plug_ordered"
    layer_order = "timm"


class Plain(FaceBackbone):
    """A plug-in on face crops that declares it supports none of the options."""

    name = "plug_plain"
    supports_input_size = False
    supports_dan_head = False
    layer_order = None


@pytest.fixture
def plugins():
    for cls in (Ordered, Plain):
        BACKBONES.register(cls)
    yield
    for cls in (Ordered, Plain):
        BACKBONES.unregister(cls.name)


def test_a_plug_in_declaring_lr_decay_passes_and_one_not_declaring_it_is_refused(plugins):
    assert FinetuneConfig(backbone="plug_ordered", lr_decay=0.75).lr_decay == 0.75
    with pytest.raises(PipelineError) as refused:
        FinetuneConfig(backbone="plug_plain", lr_decay=0.75)
    assert str(refused.value) == ("lr_decay 0.75: backbone plug_plain has no layer order; choose "
                                  "from timm, plug_ordered, swin_audio, hf_audio or lr_decay=1")  # by `order`


def test_the_declared_layer_order_decays_a_plug_ins_rates(plugins):
    torch.manual_seed(0)
    vit = timm.create_model("test_vit", pretrained=False, num_classes=0)
    groups, model = {}, Classifier(vit, vit.num_features)
    for backbone in ("timm", "plug_ordered"):
        optimizer = make_optimizer(model, FinetuneConfig(backbone=backbone, lr_decay=0.75),
                                   "test_vit")
        groups[backbone] = [(g["lr"], [id(p) for p in g["params"]]) for g in optimizer.param_groups]
    assert groups["plug_ordered"] == groups["timm"] and len(groups["timm"]) > 3


def test_input_size_and_dan_follow_the_declarations(plugins):
    with pytest.raises(PipelineError, match=r"^input_size and crop_pct apply to backbone timm, not "
                                            r"plug_plain \(its input is fixed by its extractor\)$"):
        FinetuneConfig(backbone="plug_plain", input_size=64)
    with pytest.raises(PipelineError, match=r"^head dan: needs backbone timm \(a convolutional"):
        FinetuneConfig(backbone="plug_plain", head="dan")
    with pytest.raises(PipelineError, match="input_size and crop_pct apply to backbone timm, not "
                                            "plug_ordered"):
        FinetuneConfig(backbone="plug_ordered", crop_pct=0.9)  # inherited from tdnn's: none


def test_a_subclass_of_timm_inherits_what_timm_supports(plugins):
    class Subclass(FaceBackbone):
        name = "plug_subclass"

    BACKBONES.register(Subclass)
    try:
        config = FinetuneConfig(backbone="plug_subclass", input_size=64, crop_pct=0.9,
                                lr_decay=0.75, head="dan")
        assert (config.input_size, config.head) == (64, "dan")
    finally:
        BACKBONES.unregister("plug_subclass")


def test_built_ins_declare_what_they_did_before():
    declared = {name: [BACKBONES.attribute(name, a) for a in
                       ("supports_input_size", "supports_dan_head", "layer_order")]
                for name in ("timm", "iresnet", "tdnn", "swin_audio", "hf_audio")}
    assert declared == {"timm": [True, True, "timm"], "iresnet": [False, False, None],
                        "tdnn": [False, False, None], "swin_audio": [False, False, "timm"],
                        "hf_audio": [False, False, "hf_audio"]}
    for name in ("tdnn", "iresnet"):
        with pytest.raises(PipelineError, match=f"backbone {name} has no layer order; choose from "
                                                "timm, swin_audio, hf_audio or lr_decay=1"):
            FinetuneConfig(backbone=name, lr_decay=0.75)
    FinetuneConfig(backbone="swin_audio", lr_decay=0.75)
    FinetuneConfig(backbone="hf_audio", lr_decay=0.75)


def test_declarations_are_read_from_the_source_without_importing(tmp_path, monkeypatch):
    from pipeline.registry import Registry

    package = tmp_path / "capspkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "thing.py").write_text(
        'raise RuntimeError("imported")\n'
        "@register\nclass Thing:\n    name = 'thing'\n    order = 3\n"
        "    layer_order: str | None = 'timm'\n    supports_dan_head = False\n"
        "    computed = len('ab')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    things = Registry("thing", "capspkg", "fer_pipeline.capspkg_things",
                      order=lambda item: (getattr(item[1], "order", 100), item[0]))
    assert things.attribute("thing", "layer_order") == "timm"
    assert things.attribute("thing", "supports_dan_head") is False
    assert things.having("layer_order") == ["thing"]  # sorted by `order`, read the same way
    with pytest.raises(RuntimeError, match="imported"):  # not a literal: only the class knows
        things.attribute("thing", "computed")
