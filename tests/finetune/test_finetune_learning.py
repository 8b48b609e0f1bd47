"""Issue 32, fine-tuning that learns: the lone-sample batch (IResNet's BatchNorm1d), random weights
drawn by the architecture's own initialisation from the extractor's seed, and the Swin face
fine-tune of paper 000's preset selecting at the crop the preset extracts with."""

import threading

from pipeline.errors import PipelineError

import numpy as np
import pytest
import torch

from pipeline.features.extractors import create
from pipeline.features.extractors.iresnet import LAYERS, IResNet
from pipeline.features.extractors.seeding import seeded_build
from pipeline.features.extractors.timm_models import build_timm
from pipeline.features.extractors.timm_image import TimmImageConfig
from pipeline.finetune.backbones import FaceBackbone
from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.plan import MIN_BATCH, batches


@pytest.mark.parametrize("n, size, world", [(17, 8, 1), (9, 8, 1), (21, 8, 2), (1, 8, 1)])
def test_no_training_batch_holds_a_lone_sample(n, size, world):
    keys = np.zeros(n, dtype=np.int64)
    for rank in range(world):
        steps = batches(keys, size, world, rank, seed=0, epoch=1)
        assert all(len(b) >= MIN_BATCH for b in steps)
        assert sum(len(b) for b in steps) >= (n - (MIN_BATCH * world - 1)) // world


def test_iresnet_trains_on_every_batch_of_an_uneven_plan():
    """209 samples at batch 16 left one sample in the last batch: IResNet's final BatchNorm1d
    raised 'Expected more than 1 value per channel when training'."""
    torch.manual_seed(0)
    model = IResNet(LAYERS[18]).train()
    x = torch.randn(17, 3, 112, 112)
    for step in batches(np.zeros(17, dtype=np.int64), 8, 1, 0, seed=0, epoch=1):
        model(x[step])


def _conv_weights(model):
    return [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


@pytest.mark.parametrize("where", ["extract", "finetune"])
def test_random_timm_resnet_draws_timms_own_kaiming_fan_out_init(where, tmp_path):
    if where == "extract":  # the random network `extract -e timm` uses
        extractor = create("timm", config=TimmImageConfig(model="resnet10t"), device="cpu")
        extractor.load()
        model = extractor._model
    else:
        config = FinetuneConfig(model="resnet10t")
        model = FaceBackbone(config).build()
    for w in _conv_weights(model):
        fan_out = w.shape[0] * w.shape[2] * w.shape[3]
        if w.numel() < 4096:
            continue  # too few values for a tight std estimate
        expected = (2.0 / fan_out) ** 0.5  # kaiming normal, fan-out, relu: timm's ResNet init
        assert abs(float(w.detach().std()) / expected - 1) < 0.05, (tuple(w.shape), float(w.detach().std()), expected)
    # timm zeroes each block's last BatchNorm (zero_init_last): kept as the constructor sets it
    assert float(model.layer1[0].bn2.weight.detach().abs().max()) == 0.0


def test_random_weights_are_deterministic_and_leave_the_callers_stream():
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = seeded_build(lambda: build_timm("test_resnet", None), "timm", 0)
    after = torch.rand(3)
    assert torch.equal(before, after)  # the caller's generator is as it was
    torch.manual_seed(999)  # another global state: the same network
    b = seeded_build(lambda: build_timm("test_resnet", None), "timm", 0)
    c = seeded_build(lambda: build_timm("test_resnet", None), "timm", 1)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_random_weights_built_in_threads_at_once_are_the_same():
    out = [None] * 4

    def build(i):
        out[i] = seeded_build(lambda: IResNet(LAYERS[18]), "iresnet", 0).state_dict()

    threads = [threading.Thread(target=build, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(out[0][k], o[k]) for o in out[1:] for k in out[0])


# -- the input the network sees, early stopping that waits, schedules (fine-tune runs: test_resnet
# on the session's 32 px demo crops)

FAST = ["model=test_resnet", "batch_size=16", "augment.enabled=false"]


def _clips(manifests):
    from pipeline.data.manifest import load_clips

    return [c for c in load_clips(manifests, splits=("train",)) if c.labels is not None]


def _preprocessing(manifests, *sets, preset=None):
    from pipeline.finetune.config import build_config

    backbone = FaceBackbone(build_config(manifests, sets=list(sets), preset=preset,
                                              allow_random_weights=True))
    backbone.fit_input(backbone.samples(_clips(manifests)))
    return backbone.preprocessing()


def test_kim2023_face_finetune_selects_at_the_crop_the_fuse_preset_extracts(demo_manifests):
    p = _preprocessing(demo_manifests, preset="kim2023")
    assert p["crop_pct"] == 1.0 and p["input_size"] == [3, 224, 224]  # Swin: its fixed size


def test_input_size_default_and_option(demo_manifests, tmp_path):
    random = _preprocessing(demo_manifests, "model=test_resnet")
    assert random["input_size"] == [3, 32, 32] and random["crop_pct"] == 1.0  # the crops' own
    weights = tmp_path / "w.pth"
    torch.save(build_timm("test_resnet", None).state_dict(), weights)
    given = _preprocessing(demo_manifests, "model=test_resnet", f"weights={weights}")
    assert given["input_size"] == [3, 160, 160] and given["crop_pct"] == 0.95  # pretraining's
    chosen = _preprocessing(demo_manifests, "model=test_resnet", "input_size=48", "crop_pct=0.9")
    assert chosen["input_size"] == [3, 48, 48] and chosen["crop_pct"] == 0.9
    with pytest.raises(PipelineError, match="built for 224 pixels only"):
        _preprocessing(demo_manifests, "model=swin_tiny_patch4_window7_224", "input_size=112")


def test_finetune_patience_waits_for_min_epochs(demo_manifests, tmp_path):
    from stages.finetune import finetune
    from pipeline.finetune.config import build_config

    # lr 0: the dev F1 never improves after epoch 1, so patience 1 stops at epoch 2
    sets = [*FAST, "epochs=3", "patience=1", "lr=0", "head_lr=0", "sampling.interval=4"]
    assert finetune(build_config(demo_manifests, sets=sets), tmp_path / "a").epochs_run == 2
    waited = finetune(build_config(demo_manifests, sets=[*sets, "min_epochs=2"]), tmp_path / "b")
    assert waited.epochs_run == 3


def test_dev_slice_minimum_and_its_warning(demo_manifests, tmp_path):
    from pipeline.finetune.split import dev_split, dev_warnings
    from pipeline.finetune.config import build_config
    from pipeline.training.folds import videos

    _, dev, _ = dev_split(build_config(demo_manifests, sets=FAST))
    _, dev2, _ = dev_split(build_config(demo_manifests, sets=[*FAST, "dev_min_videos=2"]))
    assert len(videos(dev2)) >= 2 and len(videos(dev2)) >= len(videos(dev))
    (line,) = dev_warnings(dev[:1], 30)
    assert "one video" in line and "\n" not in line
    assert not dev_warnings(dev2, 30)


def test_finetune_schedule_resumes_byte_equal(demo_manifests, tmp_path):
    from stages.finetune import finetune
    from pipeline.features.weights_record import WEIGHTS_NAME
    from pipeline.finetune.config import build_config
    from pipeline.finetune.loop import work_dir

    sets = [*FAST, "epochs=3", "patience=3", "sampling.interval=3", "lr=1e-3",
            "schedule.kind=cosine", "schedule.warmup_epochs=1"]
    whole = tmp_path / "whole"
    finetune(build_config(demo_manifests, sets=sets), whole)

    def stop_after_one(event):  # Ctrl-C during epoch 2's report: epoch 1's checkpoint stays
        if event.task == "epochs" and event.info.get("epoch") == 2:
            raise KeyboardInterrupt

    cut = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        finetune(build_config(demo_manifests, sets=sets), cut, progress=stop_after_one)
    state = torch.load(work_dir(cut) / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and state["scheduler"] is not None
    finetune(build_config(demo_manifests, sets=sets), cut)
    assert (cut / WEIGHTS_NAME).read_bytes() == (whole / WEIGHTS_NAME).read_bytes()
    constant = tmp_path / "constant"
    finetune(build_config(demo_manifests, sets=sets[:-2]), constant)
    assert (constant / WEIGHTS_NAME).read_bytes() != (whole / WEIGHTS_NAME).read_bytes()
