"""Modality dropout: in training, mask a whole modality (image or audio) of some samples.

Yu et al. 2026 (arXiv 2603.08034) train their dual-branch transformer with "modality dropout" so
that the model relies on audio where the face is absent. Their text that the search tools reach
(the abstract) does not say the rate, whether both modalities may drop, nor the unit; the choices
here, each an option of every head that fuses two modalities (``mfm``, ``sequence``, ``gcsa``,
``gated``, ``xattn``, ``tcn``):

* **the unit is the sample**: a frame for frame heads, a whole window for window heads (the
  modality is missing over the whole window, as it is in a clip without audio or a long run of
  missing faces);
* each sample loses one modality with probability ``modality_dropout`` (``p``); which one is
  ``modality_dropout_which``: ``"either"`` (image or audio with equal chance, so each modality is
  masked at the rate ``p / 2``), ``"image"`` (only faces are dropped, at rate ``p``: the paper's
  motivation) or ``"audio"``; never both at once (a sample with nothing would teach the prior);
* never at inference: :func:`modality_keep` keeps everything unless the head is in training mode.

How a head "masks" a modality is the head's own missing-input path: the attention masks of its
tokens (``mfm``, ``xattn``), its gate (``gated``), its presence flags and zeroed features
(``sequence``, ``tcn``), zeroed inputs (``gcsa``). The draws come from torch's generator, seeded
by the run, so training stays deterministic.
"""

from __future__ import annotations

import torch

from pipeline.errors import PipelineError

WHICH = ("either", "image", "audio")  # modality_dropout_which
# What the heads that can predict without a face (gated, xattn, tcn) write at a frame without one:
# "own", their own output (from audio and context), or "nearest", the prediction of the nearest
# frame of the clip with a face (the rule of heads with face outputs, heads/__init__.py).
FACELESS = ("own", "nearest")


def check(p: float, which: str, head: str) -> None:
    """One-line errors for a head's modality-dropout options."""
    if not 0.0 <= p < 1.0:
        raise PipelineError(f"{head} modality_dropout {p}: need a probability in [0, 1)")
    if which not in WHICH:
        raise PipelineError(f"{head} modality_dropout_which {which!r}: choose from "
                            f"{', '.join(WHICH)}")


def face_outputs(rule: str, head: str) -> tuple[str, ...]:
    """The head's ``face_outputs`` under ``faceless = rule`` (its one output is ``main``)."""
    if rule not in FACELESS:
        raise PipelineError(f"{head} faceless {rule!r}: choose from {', '.join(FACELESS)}")
    return ("main",) if rule == "nearest" else ()


def modality_keep(batch: int, p: float, which: str, training: bool,
                  device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """bool [batch] ``(keep_image, keep_audio)``: which samples keep each modality.

    All True unless ``training`` and ``p > 0``; then each sample drops one modality with
    probability ``p`` (see the module docstring for ``which``), never both.
    """
    keep = torch.ones(batch, dtype=torch.bool, device=device)
    if not training or p <= 0.0 or batch == 0:
        return keep, keep.clone()
    drop = torch.rand(batch, device=device) < p
    if which == "either":
        image_side = torch.rand(batch, device=device) < 0.5
    else:
        image_side = torch.full((batch,), which == "image", dtype=torch.bool, device=device)
    return ~(drop & image_side), ~(drop & ~image_side)
