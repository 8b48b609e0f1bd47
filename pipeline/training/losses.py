"""Frame losses: cross-entropy, focal loss (per-class alpha, gamma), label smoothing and Yu et
al. 2025's coarse-fine granularity loss for expressions; binary cross-entropy with positive weights
for action units.

For frame ``i`` with target ``y`` and predicted distribution ``p``::

    ce_i    = (1 - s) * -log p_y  +  s * mean_k(-log p_k)         label smoothing s (as torch)
    loss_i  = alpha_y * (1 - p_y) ** gamma * ce_i                  focal (Lin et al. 2017)

``kind = "ce"`` is the same with ``gamma = 0``. ``alpha`` scales each frame's loss, as in the
focal-loss paper, and does not renormalise the mean (unlike torch's weighted cross-entropy).
The batch loss is the mean over frames weighted by each frame's sample weight (the number of
times it was drawn); targets ``-1`` contribute nothing.

**Coarse-fine granularity** (``kind = "coarse_fine"``, Yu et al. 2025, equation 6)::

    L = -(1/N) sum_i (1 + mu[q(y_i), q(yhat_i)]) log p_{i, y_i}

cross-entropy weighted up when the predicted class lies in another valence/arousal quadrant than
the true one. ``mu`` holds the six symmetric coefficients ``mu12 mu13 mu14 mu23 mu24 mu34``
(``mu[q, q] = 0``). The paper gives neither their values nor the quadrant of each class; our
choices, all in :class:`LossConfig`:

* quadrants (Russell's circumplex): 1 = positive valence, high arousal (Happiness, Surprise);
  2 = negative, high (Anger, Disgust, Fear); 3 = negative, low (Sadness); 4 = positive, low,
  the calm corner, for **Neutral** (low arousal, valence at or just above zero). **Other** gets
  no quadrant (-1: never penalised either way): it gathers expressions of every quadrant.
* coefficients: 0.5 between adjacent quadrants (they share valence or arousal), 1.0 between
  opposite ones (1-3 and 2-4, both axes differ): ``(0.5, 1.0, 0.5, 0.5, 1.0, 0.5)``.
* the prediction ``yhat_i`` is the argmax of the output's own probabilities (the paper: "the
  coarse granularity penalty coefficient is determined according to the emotion probability
  vector"), taken without gradient: the weight is a constant of each step, so the gradient is
  cross-entropy's, scaled. ``cf_prediction = "expected"`` uses instead the expected
  coefficient ``sum_k p_k mu[q(y), q(k)]`` (also detached).

With every ``mu`` 0 it is cross-entropy. It composes with ``alpha`` and label smoothing as
focal loss does (the weight multiplies the frame's cross-entropy).

**Which prediction** (``on``). Eq. 6 is written for the fused ``P = (m Pa + n Pv) / (m + n)``
(eq. 4), so with ``on = "fused"`` a head with that fusion (``gcsa``, ``proportional``) takes
every loss above on ``P`` (:func:`proportional_log_probs`; ``yhat`` is then the argmax of ``P``);
with ``on = "branches"`` each branch's own prediction gets the loss and the losses are summed.

Action units (Jin et al. 2021, eq. 1), for frame ``f`` with AU targets ``t`` and probabilities
``p = sigmoid(z)``::

    au_f = -sum_i (w_i * t_i * log p_i + (1 - t_i) * log(1 - p_i))     over its annotated AUs i

summed over the 12 AUs as the paper writes it (not averaged), then averaged over frames like the
expression loss. ``w_i`` is ``loss.au_pos_weight`` or, when that is empty, computed from the
training split (:func:`au_pos_weights`): the paper does not say how; we take negatives / positives
of each AU (torch's advice for ``pos_weight``), which gives positives and negatives equal total
weight, and 1 for an AU without a positive or a negative frame.

Valence and arousal (``loss.va_loss``): ``ccc`` is ``1 - CCC`` of each dimension over the batch's
valid frames (population moments, as :mod:`pipeline.metrics.va` scores), averaged over the two;
``mse`` the mean squared error over valid values; ``both`` (the default) the CCC loss plus
``loss.va_mse_weight`` times the MSE. Targets of -5 (invalid) are left out.

**Why ``both`` by default.** ``1 - CCC`` alone has a trap at the start of training. Its gradient
on the predictions' mean is ``-CCC (m_x - m_y)`` (up to a positive factor): when a batch
correlates negatively with the truth, which a fresh VA layer does for about half of its
dimensions, descent moves the mean *away* from the targets' (a larger denominator brings a
negative CCC toward 0). Under the heads' ``tanh`` and AdamW, whose first steps move every weight
of the trunk by about ``lr`` whatever the gradient's size, one or two such steps put the outputs
at +-0.99 (pre-activations about 3, 85% of them beyond 2), where they are near-constant, the
variance CCC needs is gone and every gradient through the ``tanh`` is about 100 times smaller
(AdamW's second moments still remember the first, large ones). Measured on the demo: ``tcn``
went from mean 0.33 to 0.97 in one VA step and its dev CCC stayed at 0.002;
``xattn``'s arousal at -0.99 (docs/valence-arousal.md). The MSE's pull on the mean,
``2 (m_x - m_y)``, outweighs that push from the first step, so the outputs stay where the CCC's
correlation term can work; CCC stays the objective that ranks (ABAW scores CCC). Frame heads
with many VA steps an epoch usually recover; the window heads, with few windows an epoch, did not
before early stopping. ``ccc`` remains available (Jeong et al. 2022: tanh and CCC loss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.data.labels import NUM_AUS, NUM_CLASSES, UNLABELED
from pipeline.errors import PipelineError

LOSS_KINDS = ("ce", "focal", "coarse_fine")
LOSS_ON = ("branches", "fused")  # loss.on: see proportional_log_probs
CF_PREDICTIONS = ("argmax", "expected")
QUADRANT_PAIRS = ((0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3))  # the order of LossConfig.mu


@dataclass
class LossConfig:
    kind: str = "ce"  # "ce" (cross-entropy), "focal" (Jin et al. 2021) or "coarse_fine" (Yu et al.)
    gamma: float = 2.0  # focal: focusing exponent; 0 turns focal into cross-entropy
    alpha: tuple[float, ...] = ()  # per-class loss weights, 8 values in class order; () = all 1
    label_smoothing: float = 0.0  # weight of the uniform distribution mixed into each target
    # coarse_fine: quadrant 1..4 of each class in class order (-1: none), and the coefficients
    # mu12 mu13 mu14 mu23 mu24 mu34 (see the module docstring for these defaults)
    quadrants: tuple[int, ...] = (4, 2, 2, 2, 1, 3, 1, -1)
    mu: tuple[float, ...] = (0.5, 1.0, 0.5, 0.5, 1.0, 0.5)
    cf_prediction: str = "argmax"  # coarse_fine: "argmax" class or "expected" coefficient under p
    # AU loss: the positive weight w_i of each of the 12 AUs (AU_NAMES order); () = negatives /
    # positives of each AU over the training split's AU-labelled frames
    au_pos_weight: tuple[float, ...] = ()
    # VA loss (head.tasks with "va"): "ccc" (1 - CCC per dimension, their mean, over the batch),
    # "mse", or "both" (the CCC loss + va_mse_weight * MSE; the default: the MSE keeps a batch
    # that starts anti-correlated from pushing the tanh outputs onto the rails, module docstring)
    va_loss: str = "both"
    va_mse_weight: float = 1.0  # the MSE term's weight under va_loss = "both"
    # Heads with the proportional fusion P = (m Pa + n Pv) / (m + n) (gcsa, proportional): the
    # loss of each branch's own prediction, summed ("branches"), or the loss of the fused P
    # ("fused", Yu et al. eq. 6 as written; P with the head's current m, n)
    on: str = "branches"

    def __post_init__(self) -> None:
        if self.on not in LOSS_ON:
            raise PipelineError(f"loss.on {self.on!r}: choose from {', '.join(LOSS_ON)}")
        if self.kind not in LOSS_KINDS:
            raise PipelineError(f"loss.kind {self.kind!r}: choose from {', '.join(LOSS_KINDS)}")
        if self.alpha and len(self.alpha) != NUM_CLASSES:
            raise PipelineError(f"loss.alpha has {len(self.alpha)} values: need {NUM_CLASSES}, "
                                "one per class (or none)")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise PipelineError(f"loss.label_smoothing {self.label_smoothing}: need 0 <= s < 1")
        if self.gamma < 0:
            raise PipelineError(f"loss.gamma {self.gamma}: need gamma >= 0")
        if self.va_loss not in VA_LOSSES:
            raise PipelineError(f"loss.va_loss {self.va_loss!r}: choose from {', '.join(VA_LOSSES)}")
        if not self.va_mse_weight >= 0:
            raise PipelineError(f"loss.va_mse_weight {self.va_mse_weight}: need >= 0")
        if self.au_pos_weight and (len(self.au_pos_weight) != NUM_AUS
                                   or min(self.au_pos_weight) <= 0):
            raise PipelineError(f"loss.au_pos_weight {list(self.au_pos_weight)}: need {NUM_AUS} "
                                "positive values, one per AU (or none)")
        if len(self.quadrants) != NUM_CLASSES or not set(self.quadrants) <= {-1, 1, 2, 3, 4}:
            raise PipelineError(f"loss.quadrants {list(self.quadrants)}: need {NUM_CLASSES} values "
                                "in 1..4 or -1 (no quadrant), one per class")
        if len(self.mu) != len(QUADRANT_PAIRS) or min(self.mu) < 0:
            raise PipelineError(f"loss.mu {list(self.mu)}: need 6 values >= 0 "
                                "(mu12 mu13 mu14 mu23 mu24 mu34)")
        if self.cf_prediction not in CF_PREDICTIONS:
            raise PipelineError(f"loss.cf_prediction {self.cf_prediction!r}: choose from "
                                f"{', '.join(CF_PREDICTIONS)}")


def class_penalties(config: LossConfig) -> torch.Tensor:
    """float32 [8, 8]: ``mu[q(true), q(predicted)]`` for every pair of classes (0 within a quadrant
    or for a class without one)."""
    between = torch.zeros(4, 4)
    for (a, b), value in zip(QUADRANT_PAIRS, config.mu):
        between[a, b] = between[b, a] = value
    quadrant = torch.tensor(config.quadrants)
    has = quadrant > 0
    out = between[(quadrant - 1).clamp_min(0)][:, (quadrant - 1).clamp_min(0)]
    return out * (has[:, None] & has[None, :])


def frame_losses(logits: torch.Tensor, targets: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Per-frame loss ``[N]`` for logits ``[N, 8]`` and targets ``[N]`` in 0..7."""
    log_p = F.log_softmax(logits.float(), dim=-1)
    nll = -log_p.gather(1, targets[:, None]).squeeze(1)
    loss = nll
    if config.label_smoothing:
        loss = (1 - config.label_smoothing) * nll - config.label_smoothing * log_p.mean(dim=-1)
    if config.kind == "focal" and config.gamma:
        loss = (1 - torch.exp(-nll)).pow(config.gamma) * loss
    if config.kind == "coarse_fine":
        with torch.no_grad():
            penalties = class_penalties(config).to(loss.device, loss.dtype)[targets]  # [N, 8]
            if config.cf_prediction == "argmax":
                mu = penalties.gather(1, log_p.argmax(dim=1, keepdim=True)).squeeze(1)
            else:
                mu = (penalties * log_p.exp()).sum(dim=1)
        loss = (1 + mu) * loss
    if config.alpha:
        loss = torch.tensor(config.alpha, dtype=loss.dtype, device=loss.device)[targets] * loss
    return loss


def batch_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
               config: LossConfig) -> torch.Tensor:
    """Weighted mean frame loss; logits ``[..., 8]``, targets and weights ``[...]``.

    Frames with target ``-1`` or weight 0 are left out. A batch without any target gives a zero
    that still depends on the logits (so backward works and changes nothing).
    """
    logits = logits.reshape(-1, logits.shape[-1])
    targets = targets.reshape(-1)
    weights = torch.ones_like(targets, dtype=torch.float32) if weights is None else weights.reshape(-1)
    keep = (targets != UNLABELED) & (weights > 0)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    losses = frame_losses(logits[keep], targets[keep], config)
    w = weights[keep].to(losses.dtype)
    return (w * losses).sum() / w.sum()


def proportional_log_probs(audio_logits: torch.Tensor, image_logits: torch.Tensor, m: float,
                           n: float) -> torch.Tensor:
    """``log P`` of Yu et al.'s fused prediction ``P = (m Pa + n Pv) / (m + n)``, with ``Pa`` and
    ``Pv`` the softmax of each branch's logits; computed in log space (logsumexp), so no branch's
    small probabilities underflow. ``log P`` are valid logits of ``P`` (their softmax is ``P``), so
    :func:`batch_loss` takes them as it takes any output's logits."""
    log_pa = F.log_softmax(audio_logits.float(), dim=-1) + math.log(m)
    log_pv = F.log_softmax(image_logits.float(), dim=-1) + math.log(n)
    return torch.logaddexp(log_pa, log_pv) - math.log(m + n)


VA_LOSSES = ("ccc", "mse", "both")


def va_batch_loss(values: torch.Tensor, targets: torch.Tensor, kind: str = "ccc",
                  mse_weight: float = 1.0) -> torch.Tensor:
    """The VA loss of predictions ``[..., 2]`` (in [-1, 1]) against targets ``[..., 2]`` (-5 =
    invalid). A batch without a valid frame gives a zero that still depends on the values."""
    values = values.reshape(-1, 2).float()
    targets = targets.reshape(-1, 2).to(values.device).float()
    keep = (targets != -5.0).all(dim=1)
    if not bool(keep.any()):
        return values.sum() * 0.0
    x, y = values[keep], targets[keep]
    mse = ((x - y) ** 2).mean()
    if kind == "mse":
        return mse
    mx, my = x.mean(dim=0), y.mean(dim=0)
    vx, vy = ((x - mx) ** 2).mean(dim=0), ((y - my) ** 2).mean(dim=0)
    cov = ((x - mx) * (y - my)).mean(dim=0)
    ccc = 2 * cov / (vx + vy + (mx - my) ** 2 + 1e-8)  # 1e-8: a one-frame batch stays finite
    loss = (1 - ccc).mean()
    return loss + mse_weight * mse if kind == "both" else loss


def au_pos_weights(counts: np.ndarray) -> np.ndarray:
    """float64 [12]: negatives / positives of each AU from ``counts`` [12, 2] (negative, positive
    frames); 1 where an AU lacks either."""
    counts = np.asarray(counts, dtype=np.float64)
    negative, positive = counts[:, 0], counts[:, 1]
    return np.where((positive > 0) & (negative > 0), negative / np.maximum(positive, 1), 1.0)


def au_batch_loss(logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None,
                  pos_weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean over frames of eq. 1; logits and targets ``[..., 12]`` (targets -1, 0, 1),
    frame weights ``[...]``. AU values of -1 are left out; a frame without any annotated AU or of
    weight 0 counts for nothing; a batch without any gives a zero that still depends on the
    logits."""
    logits = logits.reshape(-1, NUM_AUS).float()
    targets = targets.reshape(-1, NUM_AUS)
    weights = (torch.ones(targets.shape[0], dtype=torch.float32, device=logits.device)
               if weights is None else weights.reshape(-1).float())
    annotated = targets != UNLABELED
    keep = annotated.any(dim=1) & (weights > 0)
    if not bool(keep.any()):
        return logits.sum() * 0.0
    values = F.binary_cross_entropy_with_logits(
        logits[keep], targets[keep].clamp_min(0).float(), reduction="none",
        pos_weight=pos_weight.to(logits.device, torch.float32))
    frame = (values * annotated[keep]).sum(dim=1)
    w = weights[keep]
    return (w * frame).sum() / w.sum()
