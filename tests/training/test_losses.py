"""Cross-entropy, focal loss and label smoothing against torch's own cross-entropy and by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.errors import PipelineError
from pipeline.training.losses import LossConfig, batch_loss


def _data(n=32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 8, generator=g) * 2, torch.randint(0, 8, (n,), generator=g)


def test_cross_entropy_and_label_smoothing_equal_torch():
    logits, targets = _data()
    assert batch_loss(logits, targets, None, LossConfig()) == pytest.approx(
        float(F.cross_entropy(logits, targets)), rel=1e-6)
    smooth = LossConfig(label_smoothing=0.1)
    assert batch_loss(logits, targets, None, smooth) == pytest.approx(
        float(F.cross_entropy(logits, targets, label_smoothing=0.1)), rel=1e-6)


def test_focal_loss_by_hand():
    logits, targets = _data(5)
    alpha = tuple(np.linspace(0.5, 2.0, 8))
    config = LossConfig(kind="focal", gamma=2.0, alpha=alpha)
    p = torch.softmax(logits, 1)[torch.arange(5), targets].double()
    expected = (torch.tensor(alpha, dtype=torch.float64)[targets] * (1 - p) ** 2 * -torch.log(p))
    assert batch_loss(logits, targets, None, config) == pytest.approx(float(expected.mean()), rel=1e-5)
    # gamma 0 and no alpha: plain cross-entropy
    assert batch_loss(logits, targets, None, LossConfig(kind="focal", gamma=0.0)) == pytest.approx(
        float(F.cross_entropy(logits, targets)), rel=1e-6)


def test_unlabelled_and_zero_weight_frames_are_left_out():
    logits, targets = _data(6)
    masked = targets.clone()
    masked[:2] = -1
    weights = torch.tensor([1.0, 1.0, 1.0, 2.0, 0.0, 1.0])
    expected = F.cross_entropy(logits[[2, 3, 3, 5]], targets[[2, 3, 3, 5]])
    assert batch_loss(logits, masked, weights, LossConfig()) == pytest.approx(float(expected), rel=1e-6)
    nothing = batch_loss(logits.requires_grad_(), torch.full((6,), -1), None, LossConfig())
    nothing.backward()
    assert float(nothing.detach()) == 0.0 and not logits.grad.any()


def test_bad_loss_config_is_one_line():
    with pytest.raises(PipelineError, match="alpha"):
        LossConfig(alpha=(1.0, 2.0))
    with pytest.raises(PipelineError, match="kind"):
        LossConfig(kind="hinge")
