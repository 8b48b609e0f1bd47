"""The evaluation pass of a training run: a head's predictions of a split, scored and written.

:func:`evaluate` streams one split's clips through the head (:func:`predict_table`: every output's
probabilities, the faceless-frame rule applied), scores every output on the labelled frames
(and the AU output of a multi-task head, :class:`pipeline.fusion.tasks.AUEvaluator`), and, given
writers, writes the predictions and face masks. :class:`pipeline.fusion.training_run.TrainingRun`
calls it after every epoch on the selection split and, for the best epoch, on val and test.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from pipeline.data.frames import nearest_face
from pipeline.data.labels import UNLABELED
from pipeline.data.manifest import Clip
from pipeline.training.folds import SELECTED_ON
from pipeline.fusion.data import Table
from pipeline.fusion.stream import ClipStream
from pipeline.fusion.heads import Head
from pipeline.data.task_splits import in_split
from pipeline.fusion.tasks import AUEvaluator, VAEvaluator, split_labels, split_va_labels
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.runs.predictions import FaceMaskWriter, PredictionWriter


def predict_table(head: Head, table: Table, batch_size: int) -> dict[str, np.ndarray]:
    """Every output's probabilities for every row of ``table``, the faceless-frame rule applied."""
    probs = head.predict(table, batch_size)
    for name in head.filled_outputs:
        for i in range(len(table.clip_ids)):
            rows = table.clip_rows(i)
            probs[name][rows] = probs[name][rows][nearest_face(table.valid[rows])]
    return head.derive(probs)


def evaluate(head: Head, stream: ClipStream, split: str, clips: Sequence[Clip],
             clip_index: dict[str, Clip], batch_size: int, select: str,
             writers: dict[str, PredictionWriter] | None = None,
             faces: FaceMaskWriter | None = None, score: bool = True, fit: bool = False,
             progress: ProgressFn = silent):
    """Scores of every output of ``head`` on ``split`` (the labelled frames of its ``clips``),
    or None without ``score``; writes the predictions (and the face masks) if given writers.

    ``clip_index``: the run's clips by id (whose task splits say which outputs a clip is scored
    and written for); ``select``: the run's selection split. With ``fit`` (only ever on the
    selection split) and a head that fits on its predictions, the model outputs of the labelled
    frames are kept, :meth:`Head.fit_on` fits on them, and the outputs derived with the fit are
    scored. ``progress`` gets a ``"predict <split>"`` event per table when writing.
    """
    assert not fit or split == select, (split, select)
    head.eval()
    evaluator = head.evaluator()
    au_evaluator = AUEvaluator() if head.au_outputs and score else None
    va_evaluator = VAEvaluator() if head.va_outputs and score else None
    fitting = score and fit and head.fits_on_validation
    model_outputs = head.model_outputs or head.outputs
    kept: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
    for table in stream.tables(clips):
        probs = predict_table(head, table, batch_size)
        if fitting:
            keep = table.labels != UNLABELED
            kept.append(({name: probs[name][keep] for name in model_outputs}, table.labels[keep]))
        elif au_evaluator is not None or va_evaluator is not None:
            # The dev slice is made of training clips: their labels are the training split's.
            task_split = "train" if split == "dev" else split
            labels, au_labels = split_labels(table, clip_index, task_split)
            evaluator.add(probs, labels)
            if au_evaluator is not None:
                au_evaluator.add(probs[head.au_outputs[0]], au_labels)
            if va_evaluator is not None:
                va_evaluator.add(probs[head.va_outputs[0]],
                                 split_va_labels(table, clip_index, task_split))
        elif score:
            evaluator.add(probs, table.labels)
        if writers is not None:
            for i, clip_id in enumerate(table.clip_ids):
                rows = table.clip_rows(i)
                for name, writer in writers.items():
                    task = ("au" if name in head.au_outputs else "va"
                            if name in head.va_outputs else "expr")
                    if in_split(clip_index[clip_id], task, split):
                        writer.add(clip_id, probs[name][rows])
                if faces is not None:
                    faces.add(clip_id, table.valid[rows].astype(bool))
        if writers is not None:  # the final pass (not every epoch's validation)
            progress(ProgressEvent(f"predict {split}", advance=len(table.clip_ids),
                                   total=len(clips)))
    if not score:
        return None
    fitted: dict[str, Any] = {}
    if fitting:
        outputs = {name: np.concatenate([k[0][name] for k in kept]) for name in model_outputs}
        labels = np.concatenate([k[1] for k in kept])
        fitted = head.fit_on(outputs, labels)
        # Each table a head fits says where: "train-dev" or "val" (stage three reads it).
        fitted = {k: {**v, "fitted_on": SELECTED_ON[select]} if isinstance(v, dict) else v
                  for k, v in fitted.items()}
        evaluator.add(head.derive(outputs), labels)
    scores, extra = evaluator.finish()
    if au_evaluator is not None:
        extra["val_au"] = au_evaluator.finish().to_json()
    if va_evaluator is not None:
        extra["val_va"] = va_evaluator.finish().to_json()
    return scores, {**extra, **fitted}
