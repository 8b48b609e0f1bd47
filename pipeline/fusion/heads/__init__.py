"""The one way to declare a stage-two head: a base class, a config dataclass, a registry.

A head is a ``torch.nn.Module`` subclass of :class:`Head` with a ``name``, a ``Config`` dataclass
(a comment on every field) and the ``@register`` decorator. The registry is :data:`HEADS`, a
:class:`pipeline.registry.Registry` (the helper every plug-in kind shares): it finds the heads
of this package's modules by reading their source, so adding a head is one new file here (or,
from another package, a module named by an entry point of group ``fer_pipeline.heads``); the
CLI's ``--method`` choices come from it.

What the training loop (:mod:`pipeline.fusion.training_run`) asks of a head:

* :meth:`Head.request`: the store arrays it reads (and which are dynamic audio windows);
* :meth:`Head.trainable` / :meth:`Head.examples`: which frames train, and the examples (frame
  rows by default; window starts for sequence heads) for one :class:`~pipeline.fusion.data.Table`;
* :meth:`Head.batch` -> :meth:`forward`: tensors for a batch of examples, then logits per output;
* :meth:`Head.predict`: probabilities for every row of a table; :meth:`Head.derive` adds outputs
  computed from others (the proportional rule); :meth:`Head.evaluator` scores a split;
  :meth:`Head.fit_on` fits what is not learnt by gradient on the selection clips' outputs (heads
  with ``fits_on_validation``; the loop calls it after every selection pass: the training split's
  dev slice by default, the validation split with ``train.select_on = "val"``).
* :meth:`Head.parameter_groups`: the optimizer's parameter groups (all parameters at
  ``train.lr`` unless a head gives some their own learning rate).

**Multi-task heads** (Jin et al. 2021). Every head of this package except ``dan``, ``gcsa`` and
``proportional`` has a ``Config`` derived from :class:`TaskConfig` and may train action units
(and VA) beside expressions (``tasks = ["expr", "au"]``): its ``__init__`` calls
:meth:`Head.add_au_output` with the width of its shared trunk's features and its ``forward``
returns :meth:`Head.with_au` of those features and its expression logits. That adds an output
``au``: one linear layer to 12 sigmoid units on the trunk (the paper's "fully connected" AU head
beside the expression one). ``Head.outputs`` stays the expression outputs; ``au_outputs`` holds
``("au",)`` on such a head (an instance attribute: it depends on the config). The AU output
depends on the face exactly when the head's expression outputs do. :meth:`Head.au_targets` gives
a batch's AU targets in the shape of its AU logits (frame heads; sequence heads override
:meth:`Head.example_rows`).

**Frames with no face image.** Outputs listed in ``face_outputs`` depend on the face. At such a
frame they take the prediction of the nearest frame of the same clip that had a face (ties: the
earlier frame; :func:`pipeline.data.frames.nearest_face`): expressions change slowly next to
the typical gap of a few missing detections, and the alternative (the audio head's guess) is much
weaker. A clip without any face keeps the head's own output (computed on zero image features, or
with all image tokens masked). Heads with face outputs train only on frames that had a face.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Optional

import numpy as np
import torch
from torch import nn

from pipeline.data.labels import NUM_AUS, NUM_CLASSES, UNLABELED, VA_INVALID, VA_NAMES
from pipeline.data.manifest import LABEL_TASKS
from pipeline.errors import PipelineError
from pipeline.fusion.data import FeatureRequest, Table
from pipeline.training.losses import LossConfig, batch_loss
from pipeline.training.sampling import SamplingConfig
from pipeline.metrics.scores import Scores, confusion_matrix
from pipeline.registry import Registry
from pipeline.runs.predictions import AU_OUTPUT, VA_OUTPUT

Batch = tuple[dict[str, torch.Tensor], torch.Tensor, Optional[torch.Tensor]]  # inputs, targets, weights


@dataclass
class TaskConfig:
    """Base of the configs of heads that can learn action units beside expressions."""

    # "expr" (always); "au": 12 AU sigmoid units beside it; "va": valence and arousal, 2 tanh units
    tasks: tuple[str, ...] = ("expr",)

    def __post_init__(self) -> None:
        if "expr" not in self.tasks or not set(self.tasks) <= set(LABEL_TASKS) \
                or len(set(self.tasks)) != len(self.tasks):
            raise PipelineError(f"head.tasks {list(self.tasks)}: want \"expr\" and any of "
                                '"au", "va", e.g. ["expr", "au", "va"]')


class Evaluator:
    """Streams a split's predictions into one confusion matrix per output; ``finish`` scores them.

    It also keeps each output's validation loss, ``val_loss``: the mean negative log-likelihood
    of the labelled frames' true class under the written probabilities (cross-entropy). It is
    not the training loss when that is focal or weighted; it shows over-fitting all the same.
    """

    def __init__(self, outputs: tuple[str, ...]) -> None:
        self.confusion = {name: np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64) for name in outputs}
        self.nll = dict.fromkeys(outputs, 0.0)
        self.frames = 0

    def add(self, probs: dict[str, np.ndarray], labels: np.ndarray) -> None:
        labelled = labels >= 0
        rows, truth = np.flatnonzero(labelled), labels[labelled].astype(np.int64)
        self.frames += rows.size
        for name, matrix in self.confusion.items():
            matrix += confusion_matrix(labels, probs[name].argmax(axis=1))
            picked = np.asarray(probs[name], np.float64)[rows, truth]
            self.nll[name] -= float(np.log(np.clip(picked, 1e-12, None)).sum())

    def finish(self) -> tuple[dict[str, Scores], dict[str, Any]]:
        """Scores per output, and anything else worth keeping in metrics.json (``val_loss``)."""
        loss = {name: total / max(self.frames, 1) for name, total in self.nll.items()}
        return ({name: Scores.from_confusion(m) for name, m in self.confusion.items()},
                {"val_loss": loss})


class Classifier(nn.Module):
    """LayerNorm, dropout, then a linear layer (``hidden`` 0) or a one-hidden-layer MLP.

    The LayerNorm puts features of any frozen backbone on one scale, so that one learning rate
    suits them all; the layer on top is linear, as Kim et al. 2023's Y_I and Y_A are (the
    LayerNorm and dropout before it are ours).
    """

    def __init__(self, dim: int, hidden: int = 0, dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.LayerNorm(dim), nn.Dropout(dropout)]
        if hidden:
            layers += [nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout)]
        layers.append(nn.Linear(hidden or dim, NUM_CLASSES))
        self.net = nn.Sequential(*layers)
        self.width = hidden or dim  # size of the trunk features the last layer classifies

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the last linear layer (what a multi-task head shares)."""
        return self.net[:-1](x)


def pooled(features: np.ndarray, batch_dims: int = 1) -> np.ndarray:
    """Mean over the spatial axes of token maps ``[..., H, W, D]`` -> ``[..., D]`` (vectors pass)."""
    extra = features.ndim - batch_dims - 1
    return features.mean(axis=tuple(range(batch_dims, batch_dims + extra))) if extra else features


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``tokens`` [B, K, D] over positions where ``mask`` [B, K] is True (0 if none)."""
    weights = mask.to(tokens.dtype)[..., None]
    return (tokens * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1.0)


class Head(nn.Module, metaclass=ABCMeta):
    """Base class of every head (see the module docstring for the contract)."""

    name: ClassVar[str]
    Config: ClassVar[type]
    outputs: ClassVar[tuple[str, ...]] = ("main",)  # what the head writes, in order
    primary: ClassVar[str] = "main"  # the output early stopping and the summary use
    face_outputs: ClassVar[tuple[str, ...]] = ("main",)  # outputs that depend on the face image
    model_outputs: ClassVar[tuple[str, ...] | None] = None  # what forward returns (None: outputs)
    needs_audio: ClassVar[bool] = False  # a training frame needs audio and a pure enough window
    batch_size: ClassVar[int] = 64  # training examples per step unless train.batch_size is set
    fused_loss: ClassVar[bool] = False  # its loss can train a proportional fusion (loss.on=fused)

    def __init__(self, config: Any, dims: dict[str, tuple[int, ...]]) -> None:
        super().__init__()
        self.config = config
        self.dims = dims
        self.tasks: tuple[str, ...] = tuple(getattr(config, "tasks", ("expr",)))
        self.au_outputs: tuple[str, ...] = (AU_OUTPUT,) if "au" in self.tasks else ()
        self.va_outputs: tuple[str, ...] = (VA_OUTPUT,) if "va" in self.tasks else ()

    # ---- action units beside expressions (heads with a TaskConfig) -----------------------------

    def add_au_output(self, width: int) -> None:
        """Add the AU layer (and the VA layer) on trunk features of size ``width`` (when AU, or
        VA, is one of the tasks). The VA layer is made after the AU one, so that a run of
        ["expr", "au"] draws the same initial weights as before VA existed."""
        if self.au_outputs:
            self.au_layer = nn.Linear(width, NUM_AUS)
        if self.va_outputs:
            self.va_layer = nn.Linear(width, len(VA_NAMES))

    @property
    def aux_outputs(self) -> tuple[str, ...]:
        """The outputs of the tasks beside expressions (AU, VA)."""
        return self.au_outputs + self.va_outputs

    def with_au(self, trunk: torch.Tensor, logits: dict[str, torch.Tensor]
                ) -> dict[str, torch.Tensor]:
        """``logits`` plus the AU logits of the trunk features (when AU is one of the tasks)."""
        if self.au_outputs:
            logits[AU_OUTPUT] = self.au_layer(trunk)
        if self.va_outputs:  # tanh: valence and arousal in [-1, 1]
            logits[VA_OUTPUT] = torch.tanh(self.va_layer(trunk))
        return logits

    @property
    def filled_outputs(self) -> tuple[str, ...]:
        """Outputs whose faceless frames take the nearest face's prediction."""
        return self.face_outputs + (self.aux_outputs if self.face_outputs else ())

    def task_frames(self, table: Table) -> np.ndarray:
        """bool [N]: frames with the inputs this head learns AUs and VA from: a face where its
        outputs depend on one, audio where it needs audio (heads that fuse whatever is present,
        ``gated`` and the window heads, say: a face or audio)."""
        ok = np.ones(table.n_rows, dtype=bool)
        if self.face_outputs:
            ok &= table.valid
        if self.needs_audio:
            ok &= table.audio
        return ok

    def au_trainable(self, table: Table) -> np.ndarray:
        """bool [N]: frames with AU labels this head can learn AUs from."""
        return (table.au_labels != UNLABELED).any(axis=1) & self.task_frames(table)

    def va_trainable(self, table: Table) -> np.ndarray:
        """bool [N]: frames with VA labels this head can learn VA from."""
        return (table.va_labels != VA_INVALID).all(axis=1) & self.task_frames(table)

    def va_targets(self, table: Table, examples: np.ndarray, trainable: np.ndarray
                   ) -> torch.Tensor:
        """float32 VA targets ``[*rows, 2]`` of ``examples``; -5 at rows not ``trainable``."""
        rows, inside = self.example_rows(table, examples)
        keep = (inside & trainable[rows])[..., None]
        return torch.from_numpy(np.where(keep, table.va_labels[rows], VA_INVALID)
                                .astype(np.float32))

    def example_rows(self, table: Table, examples: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows each example is scored on (``[B]`` for frame heads) and which of them lie
        in the example's clip."""
        return examples, np.ones(examples.shape, dtype=bool)

    def au_targets(self, table: Table, examples: np.ndarray, trainable: np.ndarray
                   ) -> torch.Tensor:
        """int8 AU targets ``[*rows, 12]`` of ``examples``; -1 at rows not ``trainable``."""
        rows, inside = self.example_rows(table, examples)
        keep = (inside & trainable[rows])[..., None]
        return torch.from_numpy(np.where(keep, table.au_labels[rows], UNLABELED).astype(np.int8))

    def probabilities(self, name: str, logits: torch.Tensor) -> np.ndarray:
        """float32 probabilities of an output: sigmoid per AU, softmax over the classes; the VA
        output's values as they are (already tanh)."""
        logits = logits.float()
        if name in self.va_outputs:
            return logits.cpu().numpy()
        probs = torch.sigmoid(logits) if name in self.au_outputs else torch.softmax(logits, dim=-1)
        return probs.cpu().numpy()

    # ---- what to read and what trains ----------------------------------------------------------

    @classmethod
    @abstractmethod
    def request(cls, config: Any, sampling: SamplingConfig) -> FeatureRequest:
        """The store arrays this head reads."""

    def trainable(self, table: Table) -> np.ndarray:
        """bool [N]: labelled frames this head can learn from."""
        ok = table.labels != UNLABELED
        if self.face_outputs:
            ok &= table.valid
        if self.needs_audio:
            ok &= table.audio & table.window_ok.any(axis=1)
        return ok

    def examples(self, table: Table, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """This epoch's training examples in ``table``: frame rows, each repeated ``counts`` times."""
        return np.repeat(np.arange(table.n_rows), counts)

    # ---- batches and outputs -------------------------------------------------------------------

    @abstractmethod
    def batch(self, table: Table, examples: np.ndarray, counts: np.ndarray | None) -> Batch:
        """(inputs, targets, weights) for ``examples``; ``counts`` is None at inference."""

    def parameter_groups(self) -> list[dict]:
        """The optimizer's parameter groups; a group without ``"lr"`` uses ``train.lr``."""
        return [{"params": list(self.parameters())}]

    def loss(self, logits: dict[str, torch.Tensor], targets: torch.Tensor,
             weights: torch.Tensor | None, config: LossConfig) -> torch.Tensor:
        """Sum of the outputs' losses: a head with several outputs trains them all at once (our
        choice for ``mfm``; Kim et al. 2023 do not say how Y_I, Y_A and Y_T are trained)."""
        return sum(batch_loss(value, targets, weights, config) for name, value in logits.items()
                   if name not in self.aux_outputs)

    @torch.no_grad()
    def predict(self, table: Table, batch_size: int) -> dict[str, np.ndarray]:
        """float32 [N, 8] probabilities per model output (``[N, 12]`` for AUs) for every row of
        ``table``."""
        rows = np.arange(table.n_rows)
        names = (self.model_outputs or self.outputs) + self.aux_outputs
        parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
        device = next(self.parameters()).device
        for begin in range(0, rows.size, batch_size):
            inputs, _, _ = self.batch(table, rows[begin:begin + batch_size], None)
            logits = self({k: v.to(device) for k, v in inputs.items()})
            for name in names:
                parts[name].append(self.probabilities(name, logits[name]))
        return {name: np.concatenate(p) if p else
                np.zeros((0, NUM_AUS if name in self.au_outputs else len(VA_NAMES)
                          if name in self.va_outputs else NUM_CLASSES), np.float32)
                for name, p in parts.items()}

    def derive(self, probs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Add outputs computed from the model's outputs (none by default)."""
        return probs

    def evaluator(self) -> Evaluator:
        return Evaluator(type(self).outputs)  # the expression outputs (AUs: pipeline.fusion.tasks)

    fits_on_validation: ClassVar[bool] = False  # the loop calls fit_on after validation passes

    def fit_on(self, outputs: dict[str, np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        """Fit on the model outputs of the labelled selection frames (all at once); returns what
        to keep in metrics.json (the loop adds ``"fitted_on"`` to each table). Nothing by
        default."""
        return {}

    def start_from(self, store: Any) -> None:
        """Load the trained weights the config names as this head's starting point (``dan``'s
        ``head.init_from``), checked against ``store`` (what the run reads); called once by the
        training run after building the head, never by a bundle (its own weights follow).
        Nothing by default."""

    @classmethod
    def after_training(cls, run_dir: Any, store: Any, clips: Any) -> None:
        """Write what a finished run of this head adds to its run directory (e.g. ``dan``'s
        attention maps); called by ``stages.fuse`` with the run's store and clips. Nothing by
        default."""


def _check(cls: type[Head]) -> None:
    if cls.primary not in cls.outputs:
        raise ValueError(f"head {cls.name!r}: primary output {cls.primary!r} not in {cls.outputs}")


# Every head by name (pipeline.registry): the modules of this package and entry points of group
# fer_pipeline.heads (NAME = "module.path"); a module is imported when its head is asked for.
HEADS: Registry[type[Head]] = Registry("method", __name__, "fer_pipeline.heads", check=_check)
ENTRY_POINT_GROUP = HEADS.group
register = HEADS.register  # class decorator: make a head available by its ``name``


def registry() -> dict[str, type[Head]]:
    """Every head by name (imports every head module)."""
    return HEADS.classes()


def head_class(name: str) -> type[Head]:
    """The head registered as ``name``; a one-line error with the choices for an unknown one."""
    return HEADS.get(name)
