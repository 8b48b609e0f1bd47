"""The ``timm`` extractor and the checkpoint reader: every published layout loads into timm models and
gives timm's own ``forward_head(forward_features(x), pre_logits=True)``; maps, multi-crop, messages.
"""

import pickle

import numpy as np
import pytest
import safetensors.torch
import torch
from PIL import Image

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import timm  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.extractors import create  # noqa: E402
from pipeline.features.extractors.timm_image import TimmImageConfig  # noqa: E402


def images(n: int, size: int = 64, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def reference_model(name: str, seed: int, num_classes: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes)
    for module in model.modules():  # non-trivial running statistics: the file must carry them
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    return model.eval()


def timm_features(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        tokens = model.forward_features(x)
        return model.forward_head(tokens, pre_logits=True), tokens


@pytest.fixture(scope="module")
def resnet18():
    return reference_model("resnet18", seed=11, num_classes=10)  # a classifier the loader drops


def save_layout(layout: str, model: torch.nn.Module, folder) -> object:
    state = model.state_dict()
    if layout == "pth":
        torch.save(state, folder / "w.pth")
        return folder / "w.pth"
    if layout == "safetensors":
        safetensors.torch.save_file({k: v.contiguous() for k, v in state.items()}, folder / "w.safetensors")
        return folder / "w.safetensors"
    if layout == "wrapped_module_prefix":  # a training checkpoint of a DataParallel model
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}},
                   folder / "ckpt.pth.tar")
        return folder / "ckpt.pth.tar"
    if layout == "numpy_pickle":  # as the VGGFace2 ResNet ports ship (resnet50_ft_weight.pkl)
        with open(folder / "w.pkl", "wb") as f:
            pickle.dump({k: v.numpy() for k, v in state.items()}, f, protocol=2)
        return folder / "w.pkl"
    if layout == "hf_folder":  # pytorch_model.bin in an HF-cache snapshot folder
        snapshot = folder / "models--org--face" / "snapshots" / "abc123"
        snapshot.mkdir(parents=True)
        torch.save(state, snapshot / "pytorch_model.bin")
        (snapshot / "config.json").write_text("{}")
        return folder / "models--org--face"
    assert layout == "full_model"
    torch.save(model, folder / "model.pt")
    return folder / "model.pt"


@pytest.mark.parametrize(
    "layout", ["pth", "safetensors", "wrapped_module_prefix", "numpy_pickle", "hf_folder", "full_model"])
def test_each_checkpoint_layout_equals_timms_forward(layout, resnet18, tmp_path):
    path = save_layout(layout, resnet18, tmp_path)
    config = TimmImageConfig(model="resnet18", map=True)
    extractor = create("timm", config=config, weights=path, trust_code=layout == "full_model")
    x = torch.stack([extractor.preprocess(im) for im in images(2)])
    assert x.shape == (2, 3, 224, 224)
    out = extractor.forward(x)
    pooled, tokens = timm_features(resnet18, x)
    torch.testing.assert_close(out["timm"], pooled, rtol=1e-4, atol=1e-4)
    assert out["timm_map"].shape == (2, 7, 7, 512)  # NHWC
    torch.testing.assert_close(out["timm_map"], tokens.permute(0, 2, 3, 1), rtol=1e-4, atol=1e-4)


def test_a_whole_pickled_model_needs_trust_code(resnet18, tmp_path):
    path = save_layout("full_model", resnet18, tmp_path)
    with pytest.raises(PipelineError, match=r"model.pt: .*--set trust_code=true"):
        create("timm", config=TimmImageConfig(model="resnet18"), weights=path).load()


def test_weights_of_another_depth_name_the_fix(tmp_path):
    torch.save(timm.create_model("resnet50", num_classes=0).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(PipelineError) as error:
        create("timm", config=TimmImageConfig(model="resnet18"), weights=tmp_path / "r50.pth").load()
    message = str(error.value)
    assert "add --set configs.timm.model=resnet50" in message and "\n" not in message
    assert len(message) < 200  # one line, no list of keys


def test_map_size_pools_and_multicrop_averages(resnet18, tmp_path):
    path = save_layout("pth", resnet18, tmp_path)
    pooled_map = create("timm", config=TimmImageConfig(model="resnet18", map=True, map_size=3),
                        weights=path)
    assert pooled_map.outputs()["timm_map"].shape == (3, 3, 512)
    x = torch.stack([pooled_map.preprocess(im) for im in images(2)])
    _, tokens = timm_features(resnet18, x)
    expected = torch.nn.functional.adaptive_avg_pool2d(tokens, 3).permute(0, 2, 3, 1)
    torch.testing.assert_close(pooled_map.forward(x)["timm_map"], expected, rtol=1e-4, atol=1e-4)

    own_stats = create("timm", config=TimmImageConfig(model="resnet18", mean=(0.5, 0.5, 0.5),
                                                      std=(0.25, 0.25, 0.25)), weights=path)
    mean0 = torch.tensor(pooled_map.data_config["mean"]).view(3, 1, 1)  # ImageNet's
    std0 = torch.tensor(pooled_map.data_config["std"]).view(3, 1, 1)
    pixels = pooled_map.preprocess(images(1)[0]) * std0 + mean0  # same resize and crop, in 0..1
    torch.testing.assert_close(own_stats.preprocess(images(1)[0]), (pixels - 0.5) / 0.25,
                               atol=1e-5, rtol=0)

    multi = create("timm", config=TimmImageConfig(model="resnet18", crops=(1.0,)), weights=path)
    full = create("timm", config=TimmImageConfig(model="resnet18", crop_pct=1.0), weights=path)
    pics = images(2)
    stacked = torch.stack([multi.preprocess(im) for im in pics])
    assert stacked.shape == (2, 6, 224, 224)
    own = timm_features(resnet18, torch.stack([pooled_map.preprocess(im) for im in pics]))[0]
    whole = timm_features(resnet18, torch.stack([full.preprocess(im) for im in pics]))[0]
    assert not torch.allclose(own, whole)  # the two crops differ, so the mean is a real average
    torch.testing.assert_close(multi.forward(stacked)["timm"], (own + whole) / 2, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_dinov2_small_from_a_safetensors_folder_equals_timm(tmp_path):
    name = "vit_small_patch14_dinov2"
    reference = reference_model(name, seed=5)
    folder = tmp_path / "dinov2-small"
    folder.mkdir()
    safetensors.torch.save_file(
        {k: v.contiguous() for k, v in reference.state_dict().items()}, folder / "model.safetensors")
    extractor = create("timm", config=TimmImageConfig(model=name, map=True), weights=folder)
    x = extractor.preprocess(images(1)[0])[None]
    assert x.shape == (1, 3, 518, 518)
    out = extractor.forward(x)
    pooled, tokens = timm_features(reference, x)
    torch.testing.assert_close(out["timm"], pooled, rtol=1e-4, atol=1e-4)
    assert out["timm"].shape == (1, 384) and out["timm_map"].shape == (1, 37, 37, 384)
    grid = tokens[:, reference.num_prefix_tokens:].reshape(1, 37, 37, 384)
    torch.testing.assert_close(out["timm_map"], grid, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_map_every_keeps_each_kth_map_as_is_and_marks_it(tmp_path):
    """Through the real engine and stage two's reader: the kept maps equal map_every=1's, the rows
    between are zeros (compressed away), and the frames without a map count as faceless."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "stages"))
    from extract_fixtures import make_dataset

    from pipeline.features.config import ExtractConfig
    from pipeline.features.store import FeatureStore
    from pipeline.features.store_format import mask_name
    from pipeline.fusion.data import FeatureRequest, check_inputs, read_clip
    from pipeline.data.manifest import load_clips
    from stages.extract import run_extract

    manifests = make_dataset(tmp_path, n_clips=2, n_frames=10)
    stores = {}
    for every in (1, 3):
        config = ExtractConfig(extractors=["timm"], precision="fp32", batch_size=4, configs={
            "timm": {"model": "resnet10t", "map": True, "map_every": every}})
        assert run_extract(config, manifests, tmp_path / f"s{every}.zarr").ok
        stores[every] = FeatureStore(tmp_path / f"s{every}.zarr")
    full, sparse = stores[1], stores[3]
    clips = load_clips(manifests)
    for clip in clips:
        kept = sparse.read(clip.clip_id, mask_name("timm_map"))
        np.testing.assert_array_equal(np.flatnonzero(kept), np.arange(0, clip.n_frames, 3))
        a, b = full.read(clip.clip_id, "timm_map"), sparse.read(clip.clip_id, "timm_map")
        np.testing.assert_array_equal(b[kept], a[kept])
        assert not b[~kept].any()
    request = FeatureRequest(arrays=("timm_map",))
    dims = check_inputs(sparse, clips, request)
    table = read_clip(sparse, clips[0], request, dims, train=True)
    np.testing.assert_array_equal(
        table.valid, sparse.read(clips[0].clip_id, "valid") & sparse.read(clips[0].clip_id,
                                                                         mask_name("timm_map")))
