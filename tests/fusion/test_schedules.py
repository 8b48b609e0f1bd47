"""Learning-rate schedules (pipeline.training.schedules) and min_epochs in ``fuse``: the default
leaves results as they were, a schedule resumes byte-equal, patience waits for min_epochs."""

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.training.schedules import ScheduleConfig, build_schedule

from .test_train import _predictions, _interrupt_after, _run, _same, data  # noqa: F401 (fixture)

OUTPUTS = ("main",)


def _lrs(config, epochs, spe=1):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_schedule(opt, config, epochs, spe)
    out = []
    for _ in range(epochs * spe):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_and_step():
    lrs = _lrs(ScheduleConfig(kind="cosine", warmup_epochs=2, warmup_start=0.1), 6)
    assert lrs[0] == pytest.approx(0.1) and lrs[1] == pytest.approx(0.55)
    assert lrs[2] == pytest.approx(1.0) and lrs[2] > lrs[3] > lrs[4] > lrs[5] > 0
    step = _lrs(ScheduleConfig(kind="step", step_epochs=2, gamma=0.5), 3, spe=2)
    assert step == pytest.approx([1.0, 1.0, 1.0, 1.0, 0.5, 0.5])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    assert build_schedule(opt, ScheduleConfig(), 5) is None  # constant: nothing steps
    with pytest.raises(PipelineError, match="schedule.kind"):
        ScheduleConfig(kind="linear")


def test_fuse_default_schedule_is_the_constant_rate_of_before(data, tmp_path):
    _run(data, "image", tmp_path / "default")
    _run(data, "image", tmp_path / "constant", "train.schedule.kind=constant")
    _run(data, "image", tmp_path / "cosine", "train.schedule.kind=cosine",
         "train.schedule.warmup_epochs=1")
    default = _predictions(tmp_path / "default", OUTPUTS)
    assert _same(default, _predictions(tmp_path / "constant", OUTPUTS))
    assert not _same(default, _predictions(tmp_path / "cosine", OUTPUTS))


def test_fuse_schedule_resumes_to_the_same_result(data, tmp_path):
    sets = ["train.epochs=4", "train.schedule.kind=cosine", "train.schedule.warmup_epochs=1"]
    _run(data, "image", tmp_path / "whole", *sets)
    with pytest.raises(KeyboardInterrupt):
        _run(data, "image", tmp_path / "cut", *sets, progress=_interrupt_after(2))
    resumed = _run(data, "image", tmp_path / "cut", *sets)
    assert resumed.resumed_from == 2
    assert _same(_predictions(tmp_path / "whole", OUTPUTS), _predictions(tmp_path / "cut", OUTPUTS))


def test_fuse_patience_waits_for_min_epochs(data, tmp_path):
    # lr 0: the score never improves after epoch 1, so patience 1 stops at epoch 2
    sets = ["train.epochs=4", "train.patience=1", "train.lr=0", "train.ema_epochs=0"]
    assert _run(data, "image", tmp_path / "a", *sets).epochs_run == 2
    assert _run(data, "image", tmp_path / "b", *sets, "train.min_epochs=3").epochs_run == 4
