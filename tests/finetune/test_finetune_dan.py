"""Paper 001 end to end (``finetune --set head=dan``): DAN's losses against their formulas
computed directly, the backbone and DAN's heads trained together with focal loss, the weights
folder loading in ``extract`` as the map the fuse ``dan`` head reads, the jeong2022 preset."""

import numpy as np
import pytest
import torch

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import timm  # noqa: E402

from cli.main import main  # noqa: E402
from pipeline.data.manifest import iter_manifest  # noqa: E402
from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.store import FeatureStore  # noqa: E402
from pipeline.finetune.config import build_config  # noqa: E402
from pipeline.finetune.loop import work_dir  # noqa: E402
from pipeline.training.dan import (  # noqa: E402
    DANHeads,
    DANNetConfig,
    affinity_loss,
    partition_loss,
)
from stages.finetune import finetune  # noqa: E402

SETS = ["epochs=2", "batch_size=16", "model=test_resnet", "head=dan", "loss.kind=focal"]


def test_affinity_loss_is_the_papers_formula():
    rng = np.random.default_rng(0)
    p, c = rng.normal(size=(6, 5)), rng.normal(size=(8, 5))
    y = np.array([0, 3, 3, 7, -1, 2])
    keep = y >= 0
    sigma2 = sum(np.var(c[:, d], ddof=1) for d in range(5))  # sum_d Var_k(c_kd), unbiased
    expected = np.mean([np.sum((p[i] - c[y[i]]) ** 2) for i in np.flatnonzero(keep)]) / sigma2
    got = affinity_loss(torch.tensor(p), torch.tensor(y), torch.tensor(c))
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_partition_loss_code_and_paper_forms():
    rng = np.random.default_rng(1)
    h = rng.normal(size=(3, 4, 6))  # [N, K, C]
    k = 4
    v = np.var(h, axis=1, ddof=1)  # v_ij over the heads
    eps = np.finfo(np.float64).eps
    assert float(partition_loss(torch.tensor(h), "code")) == pytest.approx(
        np.log(1 + k / (v.mean() + eps)), rel=1e-12)
    assert float(partition_loss(torch.tensor(h), "paper")) == pytest.approx(
        np.mean(np.log(1 + k / (v + eps))), rel=1e-12)
    assert float(partition_loss(torch.tensor(h[:, :1]), "code")) == 0.0  # K = 1: none


def test_heads_auxiliary_loss_weights_the_two_losses():
    torch.manual_seed(0)
    heads = DANHeads(32, DANNetConfig(heads=3, reduction=4, affinity_weight=0.5,
                                      partition_weight=2.0))
    f = torch.randn(5, 32, 3, 3)
    logits, pooled, outs = heads(f)
    assert logits.shape == (5, 8) and pooled.shape == (5, 32) and outs.shape == (5, 3, 32)
    torch.testing.assert_close(pooled, f.mean(dim=(2, 3)))
    y = torch.tensor([0, 1, 2, 3, 4])
    expected = 0.5 * affinity_loss(pooled, y, heads.centres) + 2.0 * partition_loss(outs, "code")
    torch.testing.assert_close(heads.auxiliary_loss(pooled, outs, y), expected)


@pytest.fixture(scope="module")
def tuned(demo_manifests, tmp_path_factory):
    root = tmp_path_factory.mktemp("ft_dan")
    result = finetune(build_config(demo_manifests, sets=SETS), root / "dan")
    return root / "dan", result


def test_backbone_and_heads_train_together(tuned, demo_manifests, tmp_path):
    out, result = tuned
    state = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)
    model = state["model"]
    assert any(k.startswith("head.heads.0.spatial") for k in model)  # DAN's heads trained
    assert "head.centres" in model and state["config"]["head"] == "dan"
    assert result.record.config["loss"]["kind"] == "focal"
    # the affinity and partition losses reach the backbone: without them it ends elsewhere
    plain = finetune(build_config(demo_manifests, sets=SETS + ["dan.affinity_weight=0",
                                                               "dan.partition_weight=0"]),
                     tmp_path / "plain")
    first = next(k for k in model if k.startswith("backbone.") and k.endswith("weight"))
    other = torch.load(work_dir(plain.out) / "checkpoint.pt", weights_only=True)["model"]
    assert not torch.allclose(model[first], other[first])


def test_weights_folder_gives_the_map_the_fuse_dan_head_reads(tuned, demo_manifests, tmp_path):
    out, _ = tuned
    code = main(["extract", "--manifests", str(demo_manifests), "--store", str(tmp_path / "f.zarr"),
                 "-e", "timm", "--set", "configs.timm.model=test_resnet", "--set",
                 "configs.timm.map=true", "--weights", f"timm={out}", "--precision", "fp32",
                 "--device", "cpu", "--batch-size", "8"])
    assert code == 0
    best = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)["best_state"]
    model = timm.create_model("test_resnet", pretrained=False, num_classes=0)
    model.load_state_dict(best, strict=True)
    clip = next(iter_manifest(demo_manifests / "train.jsonl"))
    got = FeatureStore(tmp_path / "f.zarr").read(clip.clip_id, "timm_map").astype(np.float32)
    assert got.ndim == 4 and got.shape[-1] == model.num_features  # [T, H, W, C]: dan's input
    # ... and the fuse `dan` head trains on it, the backbone frozen (as paper 001's chain)
    code = main(["fuse", "--method", "dan", "--store", str(tmp_path / "f.zarr"), "--manifests",
                 str(demo_manifests), "--out", str(tmp_path / "runs"), "--set",
                 "head.image=timm_map", "--set", "head.width=32", "--set", "train.epochs=1"])
    assert code == 0 and list((tmp_path / "runs").rglob("attention.npz"))


def test_refusals_name_the_reason(demo_manifests, tmp_path):
    with pytest.raises(PipelineError, match="head dan: needs backbone timm"):
        build_config(demo_manifests, sets=["head=dan", "backbone=tdnn"])
    with pytest.raises(PipelineError, match="not a spatial map"):
        finetune(build_config(demo_manifests, sets=["epochs=1", "batch_size=16", "head=dan",
                                                    "model=test_vit"]), tmp_path / "vit")


def test_jeong2022_preset_trains_dan_end_to_end_with_focal_loss_and_the_papers_augmentation(
        demo_manifests):
    c = build_config(demo_manifests, preset="jeong2022", allow_random_weights=True)
    assert (c.head, c.model, c.loss.kind, c.lr, c.batch_size, c.epochs, c.weight_decay) == (
        "dan", "resnet50", "focal", 1e-4, 1024, 8, 1e-4)
    assert c.dan.heads == 4 and c.augment.enabled
    assert c.augment.color_jitter > 0 and c.augment.hflip > 0 and c.augment.scale[0] < 1.0


# ---- fuse's dan head starting from the fine-tuned heads (head.init_from) ----------------------


@pytest.fixture(scope="module")
def extracted(tuned, demo_manifests, tmp_path_factory):
    out, _ = tuned
    store = tmp_path_factory.mktemp("ft_dan_store") / "f.zarr"
    assert main(["extract", "--manifests", str(demo_manifests), "--store", str(store), "-e",
                 "timm", "--set", "configs.timm.model=test_resnet", "--set",
                 "configs.timm.map=true", "--weights", f"timm={out}", "--precision", "fp32",
                 "--device", "cpu", "--batch-size", "8"]) == 0
    return store


def _fuse_head(store, manifests, *sets):
    from pipeline.fusion.config import build_config as fuse_config
    from pipeline.fusion.heads.dan import DANHead

    config = fuse_config("dan", store, manifests, sets=["head.image=timm_map", *sets])
    dims = {"timm_map": FeatureStore(store).read(
        next(iter_manifest(manifests / "train.jsonl")).clip_id, "timm_map").shape[1:]}
    return DANHead(config.head, dims)


def test_weights_folder_keeps_the_best_epochs_dan_heads_with_their_hash(tuned):
    import hashlib
    import json

    from safetensors.torch import load_file

    out, _ = tuned
    record = json.loads((out / "finetune.json").read_text())
    data = (out / "dan_heads.safetensors").read_bytes()
    assert record["dan_heads_sha256"] == hashlib.sha256(data).hexdigest()
    heads = load_file(str(out / "dan_heads.safetensors"))
    best = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)["best_heads"]
    assert set(heads) == set(best) and "centres" in heads and "bn.running_mean" in heads
    for key in best:
        torch.testing.assert_close(heads[key], best[key], rtol=0, atol=0)


def test_fuse_dan_head_starts_as_the_fine_tuned_networks_dan_output(tuned, extracted,
                                                                    demo_manifests):
    out, _ = tuned
    head = _fuse_head(extracted, demo_manifests, f"head.init_from={out}")
    head.start_from(FeatureStore(extracted))
    head.eval()
    # the fine-tuned network's DAN heads (the loop's own class and its checkpoint's best epoch)
    saved = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)
    reference = DANHeads(head.dims["timm_map"][-1], DANNetConfig(**saved["config"].get("dan", {})))
    reference.load_state_dict(saved["best_heads"])
    reference.eval()
    clip = next(iter_manifest(demo_manifests / "train.jsonl"))
    maps = torch.from_numpy(FeatureStore(extracted).read(clip.clip_id, "timm_map")
                            .astype(np.float32)).permute(0, 3, 1, 2)  # stored fp32: exact input
    with torch.no_grad():
        got = head({"image": maps})["main"]
        want = reference(maps)[0]
    assert isinstance(head.adapter, torch.nn.Identity)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert want.abs().max() > 1e-3  # not a trivially zero output
    # a bf16 store (extract's default precision): the same logits within bf16's rounding
    bf16 = extracted.with_name("bf16.zarr")
    assert main(["extract", "--manifests", str(demo_manifests), "--store", str(bf16), "-e",
                 "timm", "--set", "configs.timm.model=test_resnet", "--set",
                 "configs.timm.map=true", "--weights", f"timm={out}", "--precision", "bf16",
                 "--device", "cpu", "--batch-size", "8"]) == 0
    head16 = _fuse_head(bf16, demo_manifests, f"head.init_from={out}")
    head16.start_from(FeatureStore(bf16))
    head16.eval()
    rounded = torch.from_numpy(FeatureStore(bf16).read(clip.clip_id, "timm_map")
                               .astype(np.float32)).permute(0, 3, 1, 2)
    with torch.no_grad():
        got16 = head16({"image": rounded})["main"]
    assert not torch.equal(rounded, maps)  # bf16 did round the map
    torch.testing.assert_close(got16, want, rtol=0.05, atol=0.05 * float(want.abs().max()))
    # a fresh head (no init_from) gives other logits on the same map
    fresh = _fuse_head(extracted, demo_manifests, f"head.width={head.dims['timm_map'][-1]}")
    fresh.eval()
    with torch.no_grad():
        assert not torch.allclose(fresh({"image": maps})["main"], want, atol=1e-3)


def test_init_from_refusals_name_the_reason(tuned, extracted, demo_manifests, tmp_path):
    import json
    import shutil

    from pipeline.features.weights_record import WeightsRecord, write_weights_folder

    out, result = tuned
    # a folder without DAN heads (a head=linear fine-tune's)
    plain = tmp_path / "linear"
    best = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)["best_state"]
    write_weights_folder(plain, best, WeightsRecord(**{**result.record.to_json(),
                                                       "dan_heads_sha256": None}))
    assert not (plain / "dan_heads.safetensors").exists()
    head = _fuse_head(extracted, demo_manifests, f"head.init_from={plain}")
    with pytest.raises(PipelineError, match="holds no DAN heads"):
        head.start_from(FeatureStore(extracted))
    # heads of another shape
    head = _fuse_head(extracted, demo_manifests, f"head.init_from={out}", "head.heads=2")
    with pytest.raises(PipelineError, match="do not fit head dan"):
        head.start_from(FeatureStore(extracted))
    # a store whose map came from other weights (the same heads, a folder of another hash)
    other = tmp_path / "other"
    shutil.copytree(out, other)
    (other / "finetune.json").write_text(json.dumps(json.loads(
        (out / "finetune.json").read_text()), indent=1))
    head = _fuse_head(extracted, demo_manifests, f"head.init_from={other}")
    with pytest.raises(PipelineError, match="not .*other: head.init_from needs the map"):
        head.start_from(FeatureStore(extracted))
    # heads changed after the record was written
    (other / "dan_heads.safetensors").write_bytes(
        (out / "dan_heads.safetensors").read_bytes()[:-1] + b" ")
    with pytest.raises(PipelineError, match="sha256 differs"):
        head.start_from(FeatureStore(extracted))


def test_fuse_cli_trains_from_the_fine_tuned_heads(tuned, extracted, demo_manifests, tmp_path):
    out, _ = tuned
    code = main(["fuse", "--method", "dan", "--store", str(extracted), "--manifests",
                 str(demo_manifests), "--out", str(tmp_path / "runs"), "--set",
                 "head.image=timm_map", "--set", f"head.init_from={out}", "--set",
                 "train.epochs=1"])
    assert code == 0 and list((tmp_path / "runs").rglob("attention.npz"))


def test_heads_are_published_from_the_checkpoint_after_a_kill_before_publishing(
        tuned, demo_manifests, tmp_path):
    """The checkpoint keeps the best epoch's heads: a fine-tune killed between its last
    checkpoint and the folder's publication publishes them on rerun, byte for byte."""
    import shutil

    out, _ = tuned
    copy = tmp_path / "dan"
    shutil.copytree(work_dir(out), work_dir(copy))  # the working folder only: no weights folder
    result = finetune(build_config(demo_manifests, sets=SETS), copy)
    assert not result.already_complete
    assert (copy / "dan_heads.safetensors").read_bytes() == (
        out / "dan_heads.safetensors").read_bytes()
