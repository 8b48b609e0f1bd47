"""The default VA loss pulls the predictions' mean toward the targets' even when a batch starts
anti-correlated with them, so a window head's ``tanh`` VA outputs do not run onto the rails.

What happened on the demo (docs/valence-arousal.md, "Why xattn and tcn stayed flat"): when a
dimension's first batch correlates negatively with the truth (about half of random starts),
``1 - CCC`` is lowered by moving the predictions' mean *away* from the targets' (a larger
denominator brings a negative CCC toward 0); the first AdamW steps (``lr`` on every weight of the
trunk, whatever the gradient's size) drove the ``tanh`` into saturation, where the outputs are
near-constant and every gradient through them is about 100 times smaller. The default
``loss.va_loss = "both"`` adds the MSE, whose pull on the mean outweighs that push.
"""

import pytest
import torch

from pipeline.training.losses import LossConfig, va_batch_loss


def anticorrelated_batch(offset: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions [64, 2] that correlate at about -0.5 with targets of mean 0, their mean at
    ``offset``: a fresh head's first batch for one of its dimensions."""
    generator = torch.Generator().manual_seed(0)
    targets = 0.4 * torch.randn(64, 2, generator=generator)
    noise = 0.2 * torch.randn(64, 2, generator=generator)
    return offset - 0.15 * targets + noise, targets.clamp(-1, 1)


def mean_step(config: LossConfig, offset: float) -> torch.Tensor:
    """[2]: how one gradient-descent step on the predictions moves their mean, per dimension."""
    values, targets = anticorrelated_batch(offset)
    values.requires_grad_(True)
    va_batch_loss(values, targets, config.va_loss, config.va_mse_weight).backward()
    return -values.grad.sum(dim=0)


@pytest.mark.parametrize("offset", [0.3, -0.3])
def test_default_va_loss_pulls_the_mean_toward_the_targets(offset):
    values, targets = anticorrelated_batch(offset)
    assert all(torch.corrcoef(torch.stack([values[:, d], targets[:, d]]))[0, 1] < -0.2
               for d in range(2))
    step = mean_step(LossConfig(), offset)
    assert (torch.sign(step) == -torch.sign(torch.tensor(offset))).all()  # toward mean 0


@pytest.mark.parametrize("offset", [0.3, -0.3])
def test_ccc_alone_pushes_the_mean_away(offset):
    """The trap the default avoids, kept so that the test above stays about it: under
    ``va_loss = "ccc"`` the same batch's step moves the mean away from the targets'."""
    step = mean_step(LossConfig(va_loss="ccc"), offset)
    assert (torch.sign(step) == torch.sign(torch.tensor(offset))).all()
