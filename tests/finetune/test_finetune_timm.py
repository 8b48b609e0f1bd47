"""``fer-pipeline finetune`` on a timm face backbone (timm's ``test_resnet``): the folder loads in
stage one and gives timm's own forward of the trained weights; validation labels never matter;
the leakage guard applies; a changed config is refused."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import timm  # noqa: E402
import timm.data  # noqa: E402

from pipeline.data.manifest import Clip, iter_manifest, write_manifest  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from cli.main import main  # noqa: E402
from pipeline.features.extractors.seeding import seeded_build  # noqa: E402
from pipeline.features.extractors.timm_models import build_timm  # noqa: E402
from pipeline.features.store import FeatureStore  # noqa: E402
from pipeline.features.weights_record import WEIGHTS_NAME, read_record  # noqa: E402
from pipeline.finetune.config import build_config  # noqa: E402
from pipeline.finetune.loop import work_dir  # noqa: E402
from stages.finetune import finetune  # noqa: E402

SETS = ["epochs=2", "batch_size=16", "model=test_resnet"]


@pytest.fixture(scope="module")
def tuned(demo_manifests, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "timm"
    result = finetune(build_config(demo_manifests, sets=SETS), out)
    return out, result


def test_record_says_what_it_saw(tuned, demo_manifests):
    out, result = tuned
    record = read_record(out)
    assert record.family == "timm" and record.model == "test_resnet"
    assert record.selected_on == "train-dev" and 1 <= record.epoch <= record.epochs_run == 2
    train_ids = {c.clip_id for c in iter_manifest(demo_manifests / "train.jsonl")}
    val_ids = {c.clip_id for c in iter_manifest(demo_manifests / "val.jsonl")}
    seen = set(record.clips["train"]) | set(record.clips["dev"])
    assert seen <= train_ids and not seen & val_ids
    assert not set(record.clips["train"]) & set(record.clips["dev"])
    # random weights: the crops' own size (the fixture's 32 px), whole (issue 32)
    assert record.preprocessing["input_size"] == [3, 32, 32]
    assert record.preprocessing["crop_pct"] == 1.0
    assert record.initial_weights is None and record.config["epochs"] == 2
    history = json.loads((work_dir(out) / "history.json").read_text())
    assert len(history["epochs"]) == 2 and history["seconds"] > 0


def test_weights_load_in_extract_and_equal_timms_forward(tuned, demo_manifests, tmp_path):
    out, _ = tuned
    # The command a user runs: `extract -e timm --weights timm=DIR` (no preprocessing options).
    code = main(["extract", "--manifests", str(demo_manifests), "--store", str(tmp_path / "f.zarr"),
                 "-e", "timm", "--set", "configs.timm.model=test_resnet", "--weights",
                 f"timm={out}", "--precision", "fp32", "--device", "cpu", "--batch-size", "8",
                 "--splits", "train"])
    assert code == 0
    store = FeatureStore(tmp_path / "f.zarr")
    # The trained model's own forward: the backbone state the loop kept for its best epoch,
    # loaded into timm's model and run by timm with timm's eval transform.
    best = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)["best_state"]
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    model.load_state_dict(best, strict=True)
    model.eval()
    # at the size it trained at, the crops' own 32 px, whole (not the model's 160 px)
    transform = timm.data.create_transform(**{**timm.data.resolve_model_data_config(model),
                                              "input_size": (3, 32, 32), "crop_pct": 1.0},
                                           is_training=False)
    clip = next(iter_manifest(demo_manifests / "train.jsonl"))
    got = store.read(clip.clip_id, "timm").astype(np.float32)
    rows = [i for i in range(clip.n_frames) if clip.frame_path(i).exists()][:6]
    with torch.no_grad():
        x = torch.stack([transform(Image.open(clip.frame_path(i)).convert("RGB")) for i in rows])
        expected = model(x).numpy()
    # Stored as float16: within half a float16 step (2^-11 relative) plus float32 rounding.
    np.testing.assert_allclose(got[rows], expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    # Training moved the weights: the initial (seeded random) backbone gives other features.
    initial = seeded_build(lambda: build_timm("test_resnet", None), "timm", 0)
    with torch.no_grad():
        assert not np.allclose(initial.eval()(x).numpy(), expected, rtol=2e-3, atol=2e-3)


def _poisoned(manifests, tmp_path):
    """A copy of the manifests whose validation (and AU-only) labels are all changed."""
    out = tmp_path / "poisoned"
    shutil.copytree(manifests, out)
    rng = np.random.default_rng(1)
    for name in ("val.jsonl", "au_only.jsonl"):
        if not (out / name).exists():
            continue
        clips = []
        for clip in iter_manifest(out / name):
            labels = None if clip.labels is None else rng.integers(0, 8, clip.n_frames).astype(np.int8)
            clips.append(Clip(**{**{k: getattr(clip, k) for k in clip.__dataclass_fields__},
                                 "labels": labels}))
        write_manifest(out / name, clips)
    return out


def test_poisoned_validation_labels_give_identical_weights(tuned, demo_manifests, tmp_path):
    out, _ = tuned
    poisoned = _poisoned(demo_manifests, tmp_path)
    assert (poisoned / "val.jsonl").read_bytes() != (demo_manifests / "val.jsonl").read_bytes()
    again = tmp_path / "again"
    finetune(build_config(poisoned, sets=SETS), again)
    assert (again / WEIGHTS_NAME).read_bytes() == (out / WEIGHTS_NAME).read_bytes()


def test_leakage_guard_leaves_out_unguarded_au_val_clips(demo_manifests, tmp_path):
    manifests = tmp_path / "m"
    shutil.copytree(demo_manifests, manifests)
    clips = list(iter_manifest(manifests / "train.jsonl"))
    first = clips[0]
    au = np.zeros((first.n_frames, 12), dtype=np.int8)
    fields = {k: getattr(first, k) for k in first.__dataclass_fields__}
    # An expression-training clip in the AU validation split that the guard did not exclude.
    clips[0] = Clip(**{**fields, "au_labels": au, "au_split": "val", "exclude_from": ()})
    write_manifest(manifests / "train.jsonl", clips)
    result = finetune(build_config(manifests, sets=["epochs=1", "batch_size=16",
                                                    "model=test_resnet"]), tmp_path / "w")
    record = result.record
    assert record.leakage["left_out_au_val_unguarded"] == [first.clip_id]
    assert first.clip_id not in record.clips["train"] + record.clips["dev"]


def test_resume_refuses_another_config_and_a_complete_run_is_left_alone(tuned, demo_manifests):
    out, _ = tuned
    before = (out / WEIGHTS_NAME).stat().st_mtime_ns
    again = finetune(build_config(demo_manifests, sets=SETS), out)
    assert again.already_complete and (out / WEIGHTS_NAME).stat().st_mtime_ns == before
    with pytest.raises(PipelineError, match="differs in lr"):
        finetune(build_config(demo_manifests, sets=[*SETS, "lr=0.5"]), out)


def test_bad_options_are_one_line_errors(demo_manifests, tmp_path):
    with pytest.raises(PipelineError, match="backbone 'vgg'"):
        build_config(demo_manifests, sets=["backbone=vgg"])
    with pytest.raises(PipelineError, match="no such manifest directory"):
        finetune(build_config(tmp_path / "nowhere", sets=SETS), tmp_path / "w")


def test_frozen_blocks_bf16_and_accumulation(demo_manifests, tmp_path):
    sets = ["epochs=1", "batch_size=8", "accumulate=2", "precision=bf16", "model=test_resnet",
            "frozen=[\"conv1\", \"bn1\"]"]
    out = tmp_path / "w"
    finetune(build_config(demo_manifests, sets=sets), out)
    from safetensors.torch import load_file

    tuned = load_file(str(out / WEIGHTS_NAME))
    initial = seeded_build(lambda: build_timm("test_resnet", None), "timm", 0).state_dict()
    for name in ("conv1.0.weight", "conv1.6.weight", "bn1.weight", "bn1.bias"):
        assert torch.equal(tuned[name], initial[name]), name
    assert not torch.equal(tuned["layer1.0.conv1.weight"], initial["layer1.0.conv1.weight"])
    with pytest.raises(PipelineError, match="no backbone parameter is named 'stem9'"):
        finetune(build_config(demo_manifests, sets=["model=test_resnet", "frozen=[\"stem9\"]"]),
                 tmp_path / "x")


def test_presets_carry_what_the_papers_state(demo_manifests):
    jeong = build_config(demo_manifests, preset="jeong2022", allow_random_weights=True)
    assert (jeong.model, jeong.lr, jeong.batch_size, jeong.epochs, jeong.weight_decay) == (
        "resnet50", 1e-4, 1024, 8, 1e-4)
    jin = build_config(demo_manifests, preset="jin2021", sets=["batch_size=8"])  # --set wins
    assert (jin.backbone, jin.optimizer, jin.lr, jin.loss.kind, jin.batch_size) == (
        "tdnn", "sgd", 0.001, "focal", 8)
    yu = build_config(demo_manifests, preset="yu2025")
    assert (yu.loss.kind, yu.sampling.interval, yu.lr, yu.head_lr) == ("coarse_fine", 5, 1e-4, 1e-3)
    kim = build_config(demo_manifests, preset="kim2023", allow_random_weights=True)
    assert kim.model == "swin_tiny_patch4_window7_224" and kim.sampling.balance == "subsample"
    with pytest.raises(PipelineError, match="finetune preset 'nope'"):
        build_config(demo_manifests, preset="nope")


def test_presets_refuse_a_random_start_where_the_paper_starts_pretrained(demo_manifests, tmp_path,
                                                                          capsys):
    from cli.main import main

    with pytest.raises(PipelineError, match=r"preset jeong2022: the paper starts timm from "
                                            r"pretrained weights \(VGGFace2 ResNet-50\).*"
                                            r"--allow-random-weights"):
        build_config(demo_manifests, preset="jeong2022")
    with pytest.raises(PipelineError, match="starts swin_audio from pretrained"):
        build_config(demo_manifests, preset="kim2023", backbone="swin_audio")
    with pytest.raises(PipelineError, match="starts iresnet from pretrained"):
        build_config(demo_manifests, preset="jin2021", backbone="iresnet")
    weights = tmp_path / "w.pth"  # not read by build_config: the stage verifies it
    assert build_config(demo_manifests, preset="jeong2022", weights=str(weights)).weights
    build_config(demo_manifests, preset="jin2021")  # the paper is silent on its TDNN's start
    build_config(demo_manifests, sets=["model=resnet50"])  # no preset: no paper to hold it to
    code = main(["finetune", "--manifests", str(demo_manifests), "--preset", "kim2023",
                 "--out", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.startswith("error:")]) == 1
    assert "--allow-random-weights" in err and not (tmp_path / "w").exists()


def test_selects_on_the_same_train_dev_slice_as_fuse(tuned, demo_manifests, tmp_path):
    from pipeline.data.manifest import load_clips
    from pipeline.fusion.config import build_config as fuse_config
    from pipeline.fusion.run_setup import run_splits

    out, _ = tuned
    splits = run_splits(load_clips(demo_manifests, au_only=True),
                        fuse_config("image", tmp_path / "unused.zarr", demo_manifests))
    record = read_record(out)
    assert record.clips["dev"] == [c.clip_id for c in splits["dev"]]
    assert record.clips["train"] == [c.clip_id for c in splits["train"]]


def test_dataloader_workers_change_no_number(tuned, demo_manifests, tmp_path):
    # Each augmentation draw is seeded by its sample's own seed: decoding in 2 worker processes
    # trains the same weights as decoding in the training process.
    out, _ = tuned
    finetune(build_config(demo_manifests, sets=[*SETS, "workers=2"]), tmp_path / "w")
    assert (tmp_path / "w" / WEIGHTS_NAME).read_bytes() == (out / WEIGHTS_NAME).read_bytes()
