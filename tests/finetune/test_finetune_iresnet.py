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
from pipeline.features.extractors.seeding import seeded_build
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
    initial = seeded_build(lambda: IResNet(LAYERS[18]), "iresnet", 0)
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
    config = build_config(demo_manifests, preset="jin2021", backbone="iresnet", allow_random_weights=True)
    assert (config.backbone, config.iresnet.depth, config.optimizer, config.lr, config.batch_size,
            config.loss.kind) == ("iresnet", 100, "sgd", 0.001, 64, "focal")
    swin = build_config(demo_manifests, preset="kim2023", backbone="swin_audio", allow_random_weights=True)
    assert (swin.backbone, swin.swin_audio.model, swin.sampling.balance) == (
        "swin_audio", "swin_tiny_patch4_window7_224", "subsample")


def test_au_task_trains_an_au_head_with_jin2021s_positive_weights(tuned, demo_manifests, tmp_path):
    import json
    import shutil

    from pipeline.data.manifest import Clip, write_manifest

    manifests = tmp_path / "m"
    shutil.copytree(demo_manifests, manifests)
    rng = np.random.default_rng(3)
    clips = []
    for k, clip in enumerate(iter_manifest(manifests / "train.jsonl")):
        au = (rng.random((clip.n_frames, 12)) < 0.1 + 0.05 * np.arange(12)).astype(np.int8)
        au[rng.random(clip.n_frames) < 0.2] = -1  # unannotated rows
        fields = {f: getattr(clip, f) for f in clip.__dataclass_fields__}
        # One clip's AU labels come from the AU validation folder (guarded): they must not count.
        split, exclude = ("val", ("au_val",)) if k == 0 else ("train", ())
        if k == 0:
            au[:] = 1
        clips.append(Clip(**{**fields, "au_labels": au, "au_split": split, "exclude_from": exclude}))
    write_manifest(manifests / "train.jsonl", clips)
    out = tmp_path / "au"
    result = finetune(build_config(manifests, sets=[*SETS, 'tasks=["expr","au"]']), out)

    # jin2021's positive weights (negatives / positives per AU) over the training frames: face
    # crop present, expression labelled, every 3rd frame, AU training split only.
    train = set(result.record.clips["train"])
    assert clips[0].clip_id in train  # the guarded AU-val clip trains (expression only)
    rows = np.concatenate([c.au_labels[[t for t in range(c.n_frames) if t % 3 == 0
                                        and c.labels[t] >= 0 and c.frame_path(t).exists()]]
                           for c in clips if c.clip_id in train and c.au_split == "train"])
    expected = (rows == 0).sum(axis=0) / (rows == 1).sum(axis=0)
    history = json.loads((work_dir(out) / "history.json").read_text())
    np.testing.assert_allclose(history["au_pos_weight"], expected, rtol=1e-6)

    state = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)["model"]
    assert state["au_head.weight"].shape == (12, 512)
    # The AU loss reached the backbone: other weights than the expression-only run's.
    from safetensors.torch import load_file

    with_au, expr_only = load_file(str(out / WEIGHTS_NAME)), load_file(str(tuned[0] / WEIGHTS_NAME))
    assert with_au.keys() == expr_only.keys()
    assert any(not torch.equal(with_au[k], expr_only[k]) for k in with_au)
    with pytest.raises(PipelineError, match="tasks"):
        build_config(demo_manifests, sets=['tasks=["au"]'])
