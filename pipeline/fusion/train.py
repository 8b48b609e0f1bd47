"""One training loop for every head: seeded, deterministic, resumable, streaming from the store.

:func:`train` fits a registered head on the training clips, stops early on the score of the head's
primary output on the *selection* clips (macro-F1, or AU mean F1 with ``train.select_task =
"au"``), and writes a run directory (its files and the rules for resuming:
:mod:`pipeline.fusion.rundir`; the configs: :mod:`pipeline.fusion.config`).

**Selection on held-out training clips.** By default (``train.select_on = "dev"``) the selection
clips are a dev slice of the training split (``train.dev_fraction`` of its frames per class, whole
videos, seeded by ``train.dev_seed``; :func:`pipeline.training.folds.dev_slice`; a multi-task
run holds out the same expression videos, with their AU/VA-only clips), which does not train:
the run never reads a validation label to choose anything, so its validation scores are honest.
``train.select_on = "val"`` selects on the validation clips as ABAW papers do; then metrics.json
says ``"selected_on": "val"`` and stage three marks the run's val scores as fitted on the same
frames. Either way the predictions of every val (and test) clip are written.

**Fitting on the selection clips.** A head may fit something on its predictions rather than by
gradient (the proportional head's m, n): after every epoch's selection pass the loop calls
:meth:`Head.fit_on` with the outputs of the labelled selection frames, then scores the head's
outputs derived with what it fitted. The final pass (best epoch) fits again, as the paper does,
before the val and test predictions are written with the fitted choice.

**The weights kept are an average.** With ``train.ema_epochs`` (default 1) each epoch's
selection pass, ``best.pt`` and the final predictions use an exponential moving average of the
weights over about that many epochs (:mod:`pipeline.fusion.averaging`, which says why and what it
measured); training itself continues from the weights. 0 turns it off.

**Bagging members** (``bag.member >= 0``, set by ``stages/fuse.py``) train on a bootstrap resample
of the training videos left after the dev slice, drawn from the member's own seed
(:func:`pipeline.training.folds.bootstrap`); they select on the same dev slice as a single run.

**Multi-task heads** (expressions and action units) train in the same loop, their schedule
(``train.task_schedule``) saying which task each step trains (:mod:`pipeline.fusion.tasks`);
they also write ``predictions/<split>/au.npz``.

**Threads.** ``train.threads`` defaults to 1: these heads multiply small matrices, where extra
intra-op threads gain little, and on a busy 2-core machine they spin against other processes
(an ``mfm`` epoch took 13 times longer with 2 threads than with 1 there). Raise it on a
dedicated many-core machine.

**Determinism.** The model is built right after ``torch.manual_seed(seed)``; all sampling draws
come from one ``numpy`` generator seeded with ``seed``; torch runs with
``use_deterministic_algorithms(True)``. The same config on the same machine gives the same
predictions bit for bit.

**Where each piece lives.** This module is the entry point: :func:`train` (fresh, resumed or
already complete) and what it returns (:class:`RunResult`, whose ``metrics`` is the run's
:class:`~pipeline.runs.record.RunRecord`). The run's state and its one epoch loop, for every head:
:class:`pipeline.fusion.training_run.TrainingRun`; the task schedules it asks for each step's
task: :mod:`pipeline.fusion.tasks`; the evaluation and prediction pass:
:mod:`pipeline.fusion.evaluation`; the record's selection and 7-class parts:
:mod:`pipeline.fusion.run_record`; the run directory and resuming: :mod:`pipeline.fusion.rundir`
(the layout and record schema: :mod:`pipeline.runs`); configs, folds, bagging: their own modules.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import FuseConfig
from pipeline.fusion.rundir import changes, identity
from pipeline.fusion.training_run import TrainingRun
from pipeline.progress import ProgressFn, silent
from pipeline.runs.record import RunRecord
from pipeline.training.determinism import deterministic


@dataclass
class RunResult:
    """What a finished :func:`train` call reports (the CLI prints it)."""

    run_dir: Path
    method: str
    outputs: tuple[str, ...]  # the head's outputs; predictions exist for each
    primary: str  # the output early stopping used
    val_macro_f1: dict[str, float]  # validation macro-F1 per output, best epoch ({}: no val clips)
    best_epoch: int
    epochs_run: int  # epochs trained in total (over all resumptions)
    resumed_from: int  # the epoch this call continued from (0: a fresh run)
    already_complete: bool  # nothing to do: the run directory was already complete
    metrics: RunRecord  # the run's record (metrics.json)
    val_au: dict | None = None  # AU scores at 0.5, best epoch (multi-task runs)
    val_va: dict | None = None  # VA CCC per dimension and mean, best epoch (runs with VA)


def train(config: FuseConfig, run_dir: str | Path, clips: Sequence[Clip], store: FeatureStore,
          progress: ProgressFn = silent, restart: bool = False, force: bool = False) -> RunResult:
    """Train ``config.method`` on ``clips`` (all splits; train, val and optionally test) from
    ``store`` into ``run_dir``, resuming what is there.

    ``progress`` gets an ``"epochs"`` event after each epoch's checkpoint is written (so an
    exception raised there, like an interruption, loses nothing), and a ``"predict <split>"``
    event per group of clips predicted.
    """
    run_dir = Path(run_dir)
    run = TrainingRun(config, run_dir, clips, store, progress)
    if restart:
        run.dir.clear()
    saved = run.dir.load_checkpoint()
    new_identity = identity(config, run.features, run.labels_fingerprint)
    if saved is not None and "labels" not in saved["identity"]:
        new_identity.pop("labels", None)  # a checkpoint written before labels were part of it
    changed = [] if saved is None else changes(saved["identity"], new_identity)
    if changed and not force:
        raise PipelineError(f"{run_dir}: an existing run has another config ({', '.join(changed)}"
                            " differ); use --restart to discard it, --force to continue it with "
                            "this config, or --name for a new run")
    run_dir.mkdir(parents=True, exist_ok=True)
    # deterministic kernels: fail on CPU (every kernel the heads use has one), warn on CUDA
    with deterministic(config.train.threads, warn_only=not config.train.device.startswith("cpu")):
        run.build()
        if saved is not None:
            try:
                run.restore(saved)
            except (RuntimeError, ValueError, KeyError) as e:
                raise PipelineError(f"{run.dir.checkpoint}: cannot continue this run with the new config "
                                    f"({str(e).splitlines()[0]}); use --restart") from None
        resumed_from = run.epoch
        more = run.stopped is None or (run.stopped == "epochs" and run.epoch < config.train.epochs)
        if not more and run.dir.metrics.exists():
            metrics = run.dir.read_metrics()
            return _result(run, metrics, resumed_from, already_complete=True)
        if more:
            run.dir.metrics.unlink(missing_ok=True)  # the run is incomplete again until it finishes
            if run.stopped == "epochs":
                run.stopped = None
            run.fit()
        metrics = run.finish(resumed_from)
    return _result(run, metrics, resumed_from, already_complete=False)


def _result(run: TrainingRun, metrics: RunRecord, resumed_from: int,
            already_complete: bool) -> RunResult:
    return RunResult(
        run_dir=run.run_dir,
        method=run.config.method,
        outputs=run.head_class.outputs,
        primary=run.head_class.primary,
        val_macro_f1=dict(metrics.val_macro_f1),
        best_epoch=metrics.best_epoch,
        epochs_run=metrics.epochs_run,
        resumed_from=resumed_from,
        already_complete=already_complete,
        metrics=metrics,
        val_au=metrics.val_au,
        val_va=metrics.val_va,
    )

