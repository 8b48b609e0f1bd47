"""A fine-tune preset holds the run to its paper's model (``finetune --preset P --model M``):
another model is refused in one line naming the preset, the paper's model and the given one,
unless it is the paper's stand-in and ``--allow-stand-ins`` (the list ``fuse`` accepts, demo
runs) or ``--allow-other-model``. Checked at ``build_config``: nothing is built, so the paper's
ViT-L is never instantiated here."""

import pytest

from pipeline.errors import PipelineError
from pipeline.finetune.config import build_config

DINO = "vit_large_patch14_dinov2.lvd142m"


def test_another_model_is_refused_in_one_line_naming_the_preset_and_both_models(demo_manifests):
    with pytest.raises(PipelineError) as refused:
        build_config(demo_manifests, preset="sun2026", model="resnet18", allow_random_weights=True)
    message = str(refused.value)
    assert message.startswith(f"finetune --preset sun2026: the paper fine-tunes {DINO}, not resnet18")
    assert "--allow-other-model" in message and "\n" not in message
    # the stand-in flag is for the paper's stand-in only
    with pytest.raises(PipelineError, match="not resnet18"):
        build_config(demo_manifests, preset="sun2026", model="resnet18", allow_random_weights=True,
                     allow_stand_ins=True)
    # a config file or --set cannot slip another model past the preset either
    with pytest.raises(PipelineError, match="jeong2022: the paper fine-tunes resnet50, not "
                                            "resnet101"):
        build_config(demo_manifests, preset="jeong2022", sets=["model=resnet101"],
                     allow_random_weights=True)


def test_the_stand_in_is_accepted_with_the_flag_and_said(demo_manifests):
    with pytest.raises(PipelineError, match=r"not resnet18: drop --model, or pass "
                                            r"--allow-stand-ins"):
        build_config(demo_manifests, preset="jeong2022", model="resnet18", allow_random_weights=True)
    notes: list[str] = []
    config = build_config(demo_manifests, preset="jeong2022", model="resnet18",
                          allow_random_weights=True, allow_stand_ins=True, notes=notes)
    assert config.model == "resnet18" and config.head == "dan"  # the paper's settings kept
    assert notes == ["finetune --preset jeong2022: model resnet18 (its stand-in) in place of the "
                     "paper's resnet50"]
    for preset, stand_in in (("sun2026", "fer_demo_vit_small_patch14_dinov2"),
                             ("yu2026", "fer_demo_beit_small_patch16")):
        assert build_config(demo_manifests, preset=preset, model=stand_in,
                            allow_random_weights=True, allow_stand_ins=True).model == stand_in


def test_the_papers_model_and_presets_without_one_are_accepted(demo_manifests):
    notes: list[str] = []
    assert build_config(demo_manifests, preset="sun2026", allow_random_weights=True,
                        notes=notes).model == DINO
    assert build_config(demo_manifests, preset="sun2026", model=DINO, allow_random_weights=True,
                        notes=notes).model == DINO
    assert notes == []
    # yu2025 names no model (its RHCNN is not available); jin2021's face model is not a timm one
    assert build_config(demo_manifests, preset="yu2025", model="resnet18").model == "resnet18"
    assert build_config(demo_manifests, preset="jin2021", backbone="timm", model="resnet18").model
    # a backbone that does not read `model` is not held to the face model
    build_config(demo_manifests, preset="kim2023", backbone="swin_audio", model="resnet18",
                 allow_random_weights=True)


def test_allow_other_model_trains_any_model_with_the_papers_settings(demo_manifests):
    notes: list[str] = []
    config = build_config(demo_manifests, preset="sun2026", model="resnet18",
                          allow_random_weights=True, allow_other_model=True, notes=notes)
    assert (config.model, config.lr_decay, config.classifier.experts) == ("resnet18", 0.75, 4)
    assert notes == [f"finetune --preset sun2026: model resnet18 (not the paper's) in place of "
                     f"the paper's {DINO}"]


def test_the_command_refuses_before_writing_and_says_the_stand_in(demo_manifests, tmp_path, capsys):
    from cli.main import main

    out = tmp_path / "w"
    code = main(["finetune", "--manifests", str(demo_manifests), "--preset", "sun2026",
                 "--model", "resnet18", "--allow-random-weights", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err and not out.exists()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"the paper fine-tunes {DINO}, not resnet18" in errors[0]
    # the demo scale's stand-in with the flag: trains (the recipe's demo settings, one epoch)
    code = main(["finetune", "--manifests", str(demo_manifests), "--preset", "jeong2022",
                 "--model", "resnet18", "--allow-random-weights", "--allow-stand-ins",
                 "--out", str(out), "--set", "epochs=1", "--set", "batch_size=16",
                 "--set", "sampling.interval=4"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "note: finetune --preset jeong2022: model resnet18 (its stand-in)" in printed.out
    assert (out / "finetune.json").exists()
