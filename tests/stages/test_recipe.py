"""``fer-pipeline recipe``: every recipe's plan (dry run), the refusal of random backbones, skipping
finished steps, and one recipe end to end on tiny demo data."""

import json
import subprocess
import sys

import pytest

from cli.main import main
from pipeline.errors import PipelineError
from pipeline.recipes import RECIPES, recipe, render
from stages.recipe import is_done, run_recipe


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_dry_run_prints_every_stage_command_and_writes_nothing(name, tmp_path, capsys):
    work = tmp_path / "w"
    assert main(["recipe", name, "--data", str(tmp_path / "d"), "--work", str(work),
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    plan = [line for line in out.splitlines() if line.startswith("[plan]")]
    assert len(plan) == len(RECIPES[name].steps)
    commands = [line.split(": ", 1)[1] for line in plan]
    assert commands[0].startswith("fer-pipeline manifest ")
    assert any(c.startswith("fer-pipeline extract ") for c in commands)
    assert any(c.startswith(f"fer-pipeline fuse ") and f"--preset {name}" in c for c in commands)
    assert commands[-1].startswith(f"fer-pipeline ensemble {work}/runs/{name}")
    for line in RECIPES[name].missing:  # what is not built is said, not faked
        assert f"not built yet: {line}" in out.replace("\n", " ") or line[:40] in out
    if RECIPES[name].pretrained:
        assert "or --allow-random-weights" in out
    assert not work.exists()


def test_jeong2022_fuses_from_the_fine_tuned_dan_heads_of_the_folder_it_extracts_with():
    steps = {s.id: a for s, a, _ in render(recipe("jeong2022"), "D", "W", "full",
                                           {"timm": "vggface2.pth"}, False)}
    assert "timm=W/weights/timm" in steps["extract"]
    assert "head.init_from=W/weights/timm" in steps["fuse-jeong2022"]
    assert steps["finetune-timm"][steps["finetune-timm"].index("--out") + 1] == "W/weights/timm"


def test_kim2023_fine_tunes_one_audio_swin_per_window_and_extracts_with_each():
    steps = {s.id: a for s, a, _ in render(recipe("kim2023"), "D", "W", "full",
                                           {"swin": "in1k.pth"}, True)}
    for w in (32, 48, 64):
        assert f"window={w}" in steps[f"finetune-swin_audio_w{w}"]
        assert f"swin_audio_w{w}=W/weights/swin_audio_w{w}" in steps["extract"]
    assert steps["finetune-swin"][-2:] != ["--allow-random-weights"]
    assert "in1k.pth" in steps["finetune-swin"]
    assert "epochs=1" not in steps["finetune-swin"]  # full scale: the preset's epochs
    assert "epochs=1" in render(recipe("kim2023"), "D", "W", "demo", {}, True)[1][1]


def test_a_recipe_refuses_random_backbones_in_one_line(tmp_path, capsys):
    args = ["recipe", "jeong2022", "--data", str(tmp_path / "d"), "--work", str(tmp_path / "w")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        "error: recipe jeong2022: the paper starts timm from pretrained weights (VGGFace2 "
        "ResNet-50): give --weights timm=PATH, or pass --allow-random-weights"]
    assert not (tmp_path / "w").exists()
    with pytest.raises(PipelineError, match="starts no backbone 'swin'"):
        run_recipe("jeong2022", tmp_path, tmp_path / "w", weights={"swin": "x"}, dry_run=True,
                   echo=lambda line: None)
    with pytest.raises(PipelineError, match="unknown recipe 'kim2024'.*kim2023"):
        recipe("kim2024")


def test_a_step_is_done_when_its_marker_has_the_same_command_and_its_output_exists(tmp_path):
    step, args, output = render(recipe("yu2025"), str(tmp_path / "d"), str(tmp_path), "demo",
                                {}, False)[0]
    assert not is_done(tmp_path, step.id, args, output)
    (tmp_path / "recipe").mkdir()
    (tmp_path / "recipe" / "manifest.json").write_text(json.dumps({"args": args}))
    assert not is_done(tmp_path, step.id, args, output)  # no output
    (tmp_path / "manifests").mkdir()
    (tmp_path / "manifests" / "report.json").write_text("{}")
    assert is_done(tmp_path, step.id, args, output)
    assert not is_done(tmp_path, step.id, [*args, "--x"], output)  # another command: runs again
    (tmp_path / "recipe" / "manifest.json").write_text("{not json")
    assert not is_done(tmp_path, step.id, args, output)
    lines = []
    (tmp_path / "recipe" / "manifest.json").write_text(json.dumps({"args": args}))
    run_recipe("yu2025", tmp_path / "d", tmp_path, dry_run=True, echo=lines.append)
    assert [line.split(":")[0] for line in lines if line.startswith("[")] == [
        "[done] manifest", "[plan] finetune-swin", "[plan] extract", "[plan] fuse-yu2025",
        "[plan] ensemble"]


@pytest.mark.slow
def test_jin2021_runs_end_to_end_at_demo_scale_then_skips_everything(tmp_path):
    data, work = tmp_path / "data", tmp_path / "work"
    subprocess.run([sys.executable, "-m", "cli.main", "demo-data", str(data), "--clips", "12",
                    "--frames", "16", "--face-cue", "geometry"], check=True, capture_output=True)
    lines = []
    result = run_recipe("jin2021", data, work, scale="demo", allow_random_weights=True,
                        echo=lines.append)
    assert [s.status for s in result.steps] == ["ran"] * 6
    scores = json.loads((work / "scores" / "scores.json").read_text())
    assert scores  # stage three wrote its scores
    record = json.loads((work / "weights" / "tdnn" / "finetune.json").read_text())
    assert record["config"]["epochs"] == 1  # demo scale
    store = json.loads((work / "features.zarr" / "zarr.json").read_text())
    extractors = store["attributes"]["extractors"]
    assert not extractors["tdnn"]["random_weights"]
    assert extractors["iresnet"]["weights"] == str(work / "weights" / "iresnet")
    again = run_recipe("jin2021", data, work, scale="demo", allow_random_weights=True,
                       echo=lines.append)
    assert [s.status for s in again.steps] == ["skipped"] * 6


@pytest.mark.slow
def test_jeong2022_runs_end_to_end_at_demo_scale_on_its_stand_in(tmp_path):
    """ResNet-18 in place of ResNet-50: fine-tuned with DAN's heads, extracted with the
    fine-tuned weights, fused by the preset (which accepts the stand-in only with the flag the
    demo scale passes) and ensembled."""
    data, work = tmp_path / "data", tmp_path / "work"
    subprocess.run([sys.executable, "-m", "cli.main", "demo-data", str(data), "--clips", "12",
                    "--frames", "16", "--face-cue", "geometry"], check=True, capture_output=True)
    lines = []
    result = run_recipe("jeong2022", data, work, scale="demo", allow_random_weights=True,
                        echo=lines.append)
    assert "  demo scale: resnet18 in place of resnet50" in lines
    assert [s.status for s in result.steps] == ["ran"] * 5
    record = json.loads((work / "weights" / "timm" / "finetune.json").read_text())
    assert record["model"] == "resnet18" and record["config"]["head"] == "dan"
    store = json.loads((work / "features.zarr" / "zarr.json").read_text())
    timm = store["attributes"]["extractors"]["timm"]
    assert timm["config"]["model"] == "resnet18" and not timm["random_weights"]
    metrics = json.loads((work / "runs" / "jeong2022" / "metrics.json").read_text())
    assert metrics["method"] == "dan"
    assert (work / "weights" / "timm" / "dan_heads.safetensors").is_file()  # fuse started there
    assert json.loads((work / "scores" / "scores.json").read_text())["macro_f1"] >= 0


def test_make_paper_kim2023_fuses_its_random_backbones_with_the_flag_and_says_so():
    from pathlib import Path
    import shutil

    if shutil.which("make") is None:
        pytest.skip("no make")
    repo = Path(__file__).resolve().parents[2]
    plan = subprocess.run(["make", "-n", "paper-kim2023"], cwd=repo, capture_output=True,
                          text=True, timeout=60).stdout.replace("\\\n", " ")
    fuse = [line for line in plan.splitlines() if "--preset kim2023" in line]
    assert len(fuse) == 1 and "--allow-random-weights" in fuse[0]
    assert "RANDOM backbone weights" in plan


@pytest.mark.parametrize("name,paper,stand_in", [
    ("jeong2022", "resnet50", "resnet18"),
    ("sun2026", "vit_large_patch14_dinov2.lvd142m", "fer_demo_vit_small_patch14_dinov2"),
    ("yu2026", "beit_large_patch16_224.in22k_ft_in22k_in1k", "fer_demo_beit_small_patch16")])
def test_demo_scale_says_each_stand_in_and_full_scale_keeps_the_papers_model(name, paper,
                                                                            stand_in):
    lines = []
    run_recipe(name, "D", "W", scale="demo", dry_run=True, echo=lines.append)
    assert f"  demo scale: {stand_in} in place of {paper}" in lines
    for scale, model in (("demo", stand_in), ("full", paper)):
        steps = {s.id: a for s, a, _ in render(recipe(name), "D", "W", scale, {}, True)}
        assert steps["finetune-timm"][steps["finetune-timm"].index("--model") + 1] == model
        assert f"configs.timm.model={model}" in steps["extract"]
        # the fuse and finetune presets accept the stand-in only because the demo scale says so
        flagged = ("finetune-timm", f"fuse-{name}")
        assert all(("--allow-stand-ins" in steps[i]) == (scale == "demo") for i in flagged)
        assert not any("--allow-stand-ins" in a for i, a in steps.items() if i not in flagged)
    full = []
    run_recipe(name, "D", "W", scale="full", dry_run=True, echo=full.append)
    assert not any("in place of" in line for line in full)
    # the paper's pretrained weights fit the paper's model only: given them, demo scale keeps it
    given = {s.id: a for s, a, _ in render(recipe(name), "D", "W", "demo", {"timm": "p.pth"},
                                           True)}
    assert f"configs.timm.model={paper}" in given["extract"]
    assert "--allow-stand-ins" not in given[f"fuse-{name}"]
    assert "--allow-stand-ins" not in given["finetune-timm"]


def test_the_stand_ins_are_timm_models_of_the_papers_family():
    from pipeline.features.extractors.timm_models import timm_probe
    from pipeline.stand_ins import STAND_INS

    for paper, stand_in in STAND_INS.items():
        small, large = timm_probe(stand_in), timm_probe(paper)
        assert small.layout == large.layout and small.num_features < large.num_features


@pytest.mark.parametrize("scale", ["demo", "full"])
def test_every_fine_tune_step_passes_its_presets_model_check(scale, tmp_path, monkeypatch):
    """Each recipe's finetune commands get through ``finetune``'s own option parsing and config
    checks (the preset's model check among them) at both scales; training is replaced."""
    from pipeline.data.dataset import read_dataset
    from pipeline.data.manifest import write_manifests
    from pipeline.data.synthetic import DemoConfig, generate

    import pipeline.finetune.config as finetune_config

    generate(tmp_path / "data", DemoConfig(clips=8, frames=20, seed=0, size=32))
    write_manifests(read_dataset(tmp_path / "data"), tmp_path / "m")
    built, real = [], finetune_config.build_config

    def build_then_stop(*args, **kwargs):
        built.append(real(*args, **kwargs))
        raise PipelineError("built")  # the config passed every check: nothing is trained

    monkeypatch.setattr(finetune_config, "build_config", build_then_stop)
    steps = 0
    for name in sorted(RECIPES):
        for step, args, _ in render(recipe(name), "D", str(tmp_path), scale, {}, True):
            if args[0] == "finetune":
                args[args.index("--manifests") + 1] = str(tmp_path / "m")
                steps += 1
                assert main(args) == 1 and len(built) == steps, (name, step.id)
    models = {c.model for c in built if c.backbone == "timm"}
    stand_ins = {"resnet18", "fer_demo_vit_small_patch14_dinov2", "fer_demo_beit_small_patch16"}
    assert (stand_ins <= models) == (scale == "demo") and steps > 5
