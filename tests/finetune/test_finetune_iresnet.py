"""``fer-pipeline finetune --backbone iresnet`` (jin2021's face network, at depth 18, the smallest
insightface defines): the folder loads in ``extract -e iresnet`` and gives the trained network's
own forward on insightface's 112x112 [-1, 1] input (computed here with numpy and PIL, not with
the extractor's code); validation labels never matter; another depth is refused."""

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main
from pipeline.data.manifest import iter_manifest
from pipeline.errors import PipelineError
from pipeline.features.extractors import create
from pipeline.features.extractors.iresnet import LAYERS, IResNet, IResNetConfig
from pipeline.features.extractors.seeding import redraw, weights_generator
from pipeline.features.store import FeatureStore
from pipeline.features.weights_record import WEIGHTS_NAME, read_record
from pipeline.finetune.config import build_config
from pipeline.finetune.loop import work_dir
from stages.finetune import finetune
from tests.finetune.test_finetune_timm import _poisoned

# Every 3rd frame keeps two epochs of IResNet-18 within seconds on 2 cores.
SETS = ["backbone=iresnet", "iresnet.depth=18", "epochs=2", "batch_size=8", "lr=1e-3",
        "sampling.interval=3"]

pytestmark = pytest.mark.slow  # fine-tunes and an extraction of IResNet-18


@pytest.fixture(scope="module")
def tuned(demo_manifests, tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "iresnet"
    return out, finetune(build_config(demo_manifests, sets=SETS), out)


def _insightface_input(path):
    image = Image.open(path).convert("RGB").resize((112, 112), Image.BILINEAR)
    pixels = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(pixels.transpose(2, 0, 1).copy())


def test_iresnet_folder_loads_in_extract_and_equals_the_trained_forward(tuned, demo_manifests,
                                                                         tmp_path):
    out, result = tuned
    record = read_record(out)
    assert (record.family, record.model) == ("iresnet", "iresnet18")
    assert record.preprocessing["input_size"] == [3, 112, 112]
    assert record.preprocessing["mean"] == record.preprocessing["std"] == [0.5, 0.5, 0.5]
    code = main(["extract", "--manifests", str(demo_manifests), "--store", str(tmp_path / "f.zarr"),
                 "-e", "iresnet", "--set", "configs.iresnet.depth=18", "--weights",
                 f"iresnet={out}", "--precision", "fp32", "--device", "cpu", "--batch-size", "8",
                 "--splits", "train"])
    assert code == 0
    clip = next(iter_manifest(demo_manifests / "train.jsonl"))
    got = FeatureStore(tmp_path / "f.zarr").read(clip.clip_id, "iresnet").astype(np.float32)
    best = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)["best_state"]
    net = IResNet(LAYERS[18])
    net.load_state_dict(best, strict=True)
    rows = [i for i in range(clip.n_frames) if clip.frame_path(i).exists()][:6]
    x = torch.stack([_insightface_input(clip.frame_path(i)) for i in rows])
    with torch.no_grad():
        expected = net.eval()(x).numpy()
    np.testing.assert_allclose(got[rows], expected, rtol=2e-3, atol=2e-3 * np.abs(expected).max())
    # Training moved the weights away from the seeded random network it started from.
    initial = redraw(IResNet(LAYERS[18]), weights_generator("iresnet", 0))
    with torch.no_grad():
        assert not np.allclose(initial.eval()(x).numpy(), expected, rtol=2e-3, atol=2e-3)


def test_iresnet_poisoned_validation_labels_give_identical_weights(tuned, demo_manifests, tmp_path):
    out, _ = tuned
    poisoned = _poisoned(demo_manifests, tmp_path)
    again = tmp_path / "again"
    finetune(build_config(poisoned, sets=SETS), again)
    assert (again / WEIGHTS_NAME).read_bytes() == (out / WEIGHTS_NAME).read_bytes()


def test_iresnet_folder_of_another_depth_is_refused(tuned):
    out, _ = tuned
    with pytest.raises(PipelineError, match="iresnet18"):
        create("iresnet", config=IResNetConfig(depth=50), weights=out)


def test_jin2021_preset_with_the_iresnet_backbone_takes_the_image_models_settings(demo_manifests):
    config = build_config(demo_manifests, preset="jin2021", backbone="iresnet")
    assert (config.backbone, config.iresnet.depth, config.optimizer, config.lr, config.batch_size,
            config.loss.kind) == ("iresnet", 100, "sgd", 0.001, 64, "focal")
    swin = build_config(demo_manifests, preset="kim2023", backbone="swin_audio")
    assert (swin.backbone, swin.swin_audio.model, swin.sampling.balance) == (
        "swin_audio", "swin_tiny_patch4_window7_224", "subsample")
