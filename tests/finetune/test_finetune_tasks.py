"""jin2021's multi-task schedules in ``finetune`` (``task_schedule``): the order of the tasks'
batches, AU-only clips training the AU task, the idle head untouched, the preset's values."""

import numpy as np
import pytest
import torch

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import pipeline.finetune.loop as loop  # noqa: E402
from pipeline.finetune.backbones import FaceBackbone  # noqa: E402
from pipeline.finetune.config import build_config  # noqa: E402
from pipeline.finetune.model import Classifier  # noqa: E402
from pipeline.fusion.presets import PRESETS  # noqa: E402
from pipeline.training.tasks import alternate  # noqa: E402
from stages.finetune import finetune  # noqa: E402

SETS = ["batch_size=16", "model=test_resnet", 'tasks=["expr","au"]', "patience=5"]


@pytest.fixture
def spy(monkeypatch):
    """Records "E" (expression loss), "A" (AU loss), "|" (an epoch's end) and each dataset's clips."""
    calls, datasets = [], []
    for name, tag in (("batch_loss", "E"), ("au_batch_loss", "A")):
        original = getattr(loop, name)

        def wrapped(*args, _original=original, _tag=tag, **kwargs):
            calls.append(_tag)
            return _original(*args, **kwargs)
        monkeypatch.setattr(loop, name, wrapped)
    original_f1 = loop.macro_f1
    monkeypatch.setattr(loop, "macro_f1", lambda *a: (calls.append("|"), original_f1(*a))[1])
    original_dataset = FaceBackbone.dataset

    def dataset(self, samples, plan, seeds):
        if seeds is not None:  # a training dataset
            datasets.append({samples.clips[int(samples.clip[i])].clip_id for i in plan})
        return original_dataset(self, samples, plan, seeds)
    monkeypatch.setattr(FaceBackbone, "dataset", dataset)
    return calls, datasets


def epochs_of(calls):
    return "".join(calls).strip("|").split("|")


def test_batch_schedule_alternates_and_au_only_clips_train_the_au_task(spy, demo_manifests,
                                                                        tmp_path):
    calls, datasets = spy
    result = finetune(build_config(demo_manifests, sets=[*SETS, "epochs=1",
                                                         "task_schedule=batch"]), tmp_path / "b")
    (epoch,) = epochs_of(calls)
    e, a = epoch.count("E"), epoch.count("A")
    assert e and a and epoch == "".join(alternate(["E"] * e, ["A"] * a))  # E A E A ... then rest
    au_only = result.record.clips["au_only"]
    assert au_only == ["demo_007"]  # the demo's AU-only clip of the AU training split
    assert set(au_only) <= datasets[1] and not set(au_only) & datasets[0]  # in the AU task only


def test_epoch_schedule_takes_turns_and_leaves_the_idle_head_alone(spy, demo_manifests, tmp_path):
    calls, _ = spy
    finetune(build_config(demo_manifests, sets=[*SETS, "epochs=2", "task_schedule=epoch"]),
             tmp_path / "e")
    first, second = epochs_of(calls)
    assert set(first) == {"E"} and set(second) == {"A"}
    # one expression epoch: the AU head gets no gradient, so neither momentum nor decay moves it
    out = finetune(build_config(demo_manifests, sets=[*SETS, "epochs=1", "task_schedule=epoch"]),
                   tmp_path / "one").out
    state = torch.load(loop.work_dir(out) / "checkpoint.pt", weights_only=True)["model"]
    torch.manual_seed(1)  # the classifier's own stream (seed + 1)
    initial = Classifier(torch.nn.Identity(), state["head.weight"].shape[1], au=True)
    torch.testing.assert_close(state["au_head.weight"], initial.au_head.weight.detach())
    assert not torch.equal(state["head.weight"], initial.head.weight.detach())


def test_joint_schedule_is_the_default_and_sums_both_losses(spy, demo_manifests, tmp_path):
    calls, datasets = spy
    result = finetune(build_config(demo_manifests, sets=[*SETS, "epochs=1"]), tmp_path / "j")
    (epoch,) = epochs_of(calls)
    assert epoch == "EA" * (len(epoch) // 2) and len(datasets) == 1
    assert "au_only" not in result.record.clips
    # fields at their default stay out of the record: its bytes (stage one's cache key) as before
    assert not {"task_schedule", "head", "dan"} & set(result.record.config)


def test_jin2021_preset_matches_the_paper_and_the_fuse_preset(demo_manifests):
    c = build_config(demo_manifests, preset="jin2021", backbone="iresnet",
                     allow_random_weights=True)
    fuse = PRESETS["jin2021"].settings["train"]
    assert (c.optimizer, c.momentum, c.lr, c.batch_size, c.loss.kind) == ("sgd", 0.9, 0.001, 64,
                                                                           "focal")
    assert (c.weight_decay, c.grad_clip, c.task_schedule) == (
        fuse["weight_decay"], fuse["grad_clip"], fuse["task_schedule"]) == (0.0, 0.0, "batch")
    assert c.tasks == ("expr", "au")  # the image model is the paper's multi-task network
    audio = build_config(demo_manifests, preset="jin2021")  # its TDNN: expressions (not stated)
    assert audio.backbone == "tdnn" and tuple(audio.tasks) == ("expr",)


def test_unknown_schedule_is_refused(demo_manifests):
    from pipeline.errors import PipelineError

    with pytest.raises(PipelineError, match="task_schedule 'x': choose from joint, epoch, batch"):
        build_config(demo_manifests, sets=["task_schedule=x"])
    assert np.array_equal(alternate([1, 1, 1], [2]), [1, 2, 1, 1])
