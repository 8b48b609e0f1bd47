"""Export a run's per-frame predictions as tidy rows that other tools read (CSV or Parquet).

One row per frame of every clip of a split, clip by clip (memory does not grow with the split)::

    clip, index, frame, time, face, Neutral, Anger, Disgust, Fear, Happiness, Sadness, Surprise, Other, label

``index`` is 0-based (the row within the clip), ``frame`` 1-based (frame ``f`` is image
``{f:05d}.jpg``, as in the ABAW submission and in ``store import --frames-path``), ``time`` the
frame's start in seconds (``index / fps``), ``face`` whether the frame had a face image (frames
without one carry the nearest face's prediction, the run's rule), the class columns the
probabilities of the chosen output (named from the file's ``__classes__``), ``label`` the
annotation (-1: not annotated; empty / null for clips without labels, e.g. test). Parquet is
written one row group per clip with ``pyarrow`` (optional: ``pip install pyarrow``), with the
provenance (:func:`provenance`: run, method, output, split, manifests, selection, the run's
config) as JSON under the schema metadata key ``fer_pipeline``. An ``ensemble`` output folder
exports its final probabilities (``final_<split>.npz``, :mod:`pipeline.scoring.final_probs`;
``--manifests`` needed): of the scored split, or of ``test`` (the submission's clips). The file goes to the current
directory by default (``<run>.<split>.<output>.<format>``: a run directory holds only what
``fuse`` wrote), written aside and renamed.
"""

from __future__ import annotations

import contextlib
import csv
import io as text_io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import __version__, io
from pipeline.config import read_toml
from pipeline.data.manifest import SPLITS, Clip, load_clips
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent
from pipeline.scoring.final_probs import FINAL, final_face_path, final_path
from pipeline.scoring.frames import check_clip_set, clip_probs
from pipeline.runs.layout import RunPaths
from pipeline.runs.predictions import Predictions, face_mask_path, prediction_path
from pipeline.runs.record import read_run

FORMATS = ("csv", "parquet")


@dataclass
class ExportResult:
    path: Path  # the file written
    output: str  # the run output exported
    clips: int
    rows: int


def _manifests(run_dir: Path, manifests: Path | None) -> Path:
    if manifests is not None:
        return manifests
    config = RunPaths(run_dir).config
    try:
        return Path(read_toml(config)["manifests"])
    except (OSError, ValueError, KeyError):
        raise PipelineError(f"{config}: cannot read the run's manifests; pass --manifests") from None


def _is_ensemble(run_dir: Path) -> bool:
    """An output folder of ``ensemble`` (scores.json) rather than a run of ``fuse``."""
    return (run_dir / "scores.json").is_file() and not RunPaths(run_dir).metrics.is_file()


def _ensemble_source(run_dir: Path, split: str, output: str | None, manifests: str | Path | None
                     ) -> tuple[str, Path, Path, dict]:
    """(output, probabilities file, face mask file, what to record) of an ensemble folder."""
    if output not in (None, FINAL):
        raise PipelineError(f"{run_dir}: an ensemble folder has one output, {FINAL!r}")
    if manifests is None:  # (the ensemble's config does not name them)
        raise PipelineError(f"{run_dir}: an ensemble folder needs --manifests")
    try:
        scores = json.loads((run_dir / "scores.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PipelineError(f"{run_dir / 'scores.json'}: cannot read ({e})") from None
    if split == "test":  # the submission's clips, predicted by the fit on all of the tuning split
        if not final_path(run_dir, split).is_file():
            raise PipelineError(f"{final_path(run_dir, split)}: no such file (the ensemble wrote"
                                " no submission, or was run before it wrote test probabilities)")
    elif scores.get("split") != split:
        raise PipelineError(f"{run_dir}: the ensemble scored {scores.get('split')!r}, not"
                            f" {split!r} (its final probabilities are of that split, and of test)")
    recorded = {"method": "ensemble", "final": scores.get("final"), "members": scores.get("members"),
                "manifest_fingerprint": scores.get("manifest_fingerprint"),
                "selected_on": (scores.get("tuning") or {}).get("protocol")}
    return FINAL, final_path(run_dir, split), final_face_path(run_dir, split), recorded


def _columns(clip: Clip, probs: np.ndarray, face: np.ndarray) -> dict[str, np.ndarray]:
    index = np.arange(clip.n_frames)
    return {"index": index, "frame": index + 1, "time": index / clip.fps,
            "face": face.astype(bool), "probs": probs,
            "label": None if clip.labels is None else clip.labels.astype(np.int16)}


def provenance(run_dir: Path, run_metrics: dict, output: str, split: str, manifests: Path) -> dict:
    """What a Parquet file records about where its rows come from."""
    config = RunPaths(run_dir).config
    return {
        "fer_pipeline_version": __version__,
        "run": str(run_dir.resolve()),
        "method": run_metrics.get("method"),
        "output": output,
        "split": split,
        "manifests": str(Path(manifests).resolve()),
        "manifest_fingerprint": run_metrics.get("manifest_fingerprint"),
        "selected_on": run_metrics.get("selected_on"),
        "best_epoch": run_metrics.get("best_epoch"),
        "columns": {"index": "0-based row of the clip", "frame": "1-based frame number (image "
                    "{frame:05d}.jpg)", "time": "seconds, index / fps", "face": "frame had a face "
                    "image", "label": "annotation, -1 not annotated, null: clip without labels"},
        "config_toml": config.read_text(encoding="utf-8") if config.is_file() else None,
    }


class _CsvWriter:
    def __init__(self, file, classes: tuple[str, ...], metadata: dict) -> None:
        self.file = file  # (CSV has no place for the provenance: Parquet keeps it)
        csv.writer(file, lineterminator="\n").writerow(
            ["clip", "index", "frame", "time", "face", *classes, "label"])

    def write(self, clip_id: str, columns: dict[str, np.ndarray]) -> None:
        quoted = text_io.StringIO()
        csv.writer(quoted, lineterminator="").writerow([clip_id])  # quoted only if it must be
        label = columns["label"]
        numbers = np.column_stack([columns["index"], columns["frame"], columns["time"],
                                   columns["face"], columns["probs"],
                                   *(() if label is None else (label,))])
        fmt = ["%d", "%d", "%.6f", "%d"] + ["%.6g"] * columns["probs"].shape[1]
        fmt += [] if label is None else ["%d"]
        body = text_io.StringIO()
        np.savetxt(body, numbers, fmt=fmt, delimiter=",")
        ending = "\n" if label is not None else ",\n"
        prefix = quoted.getvalue() + ","
        self.file.write("".join(prefix + line + ending for line in body.getvalue().splitlines()))

    def close(self) -> None:
        pass


class _ParquetWriter:
    def __init__(self, path: Path, classes: tuple[str, ...], metadata: dict) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa, self.classes = pa, classes
        self.schema = pa.schema([("clip", pa.string()), ("index", pa.int32()),
                                 ("frame", pa.int32()), ("time", pa.float64()),
                                 ("face", pa.bool_()),
                                 *((name, pa.float32()) for name in classes),
                                 ("label", pa.int16())],
                                metadata={"fer_pipeline": json.dumps(metadata)})
        self.writer = pq.ParquetWriter(str(path), self.schema)

    def write(self, clip_id: str, columns: dict[str, np.ndarray]) -> None:
        pa, n = self.pa, len(columns["frame"])
        label = columns["label"]
        arrays = [pa.array([clip_id] * n, pa.string()), pa.array(columns["index"], pa.int32()),
                  pa.array(columns["frame"], pa.int32()),
                  pa.array(columns["time"], pa.float64()), pa.array(columns["face"], pa.bool_()),
                  *(pa.array(columns["probs"][:, k], pa.float32()) for k in range(len(self.classes))),
                  pa.nulls(n, pa.int16()) if label is None else pa.array(label, pa.int16())]
        self.writer.write_table(pa.Table.from_arrays(arrays, schema=self.schema))

    def close(self) -> None:
        self.writer.close()


def _check_parquet() -> None:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise PipelineError("--format parquet needs the pyarrow package (pip install pyarrow);"
                            " or use --format csv") from None


def export_predictions(run_dir: str | Path, fmt: str = "csv", split: str = "val",
                       output: str | None = None, out: str | Path | None = None,
                       manifests: str | Path | None = None,
                       progress: ProgressFn = silent) -> ExportResult:
    """Write ``output``'s (default: the run's primary) ``split`` predictions of ``run_dir`` as
    tidy rows to ``out`` (default ``./<run>.<split>.<output>.<fmt>``). ``run_dir`` may also be
    an ``ensemble`` output folder: its final probabilities (output ``final``) are exported."""
    run_dir = Path(run_dir)
    if fmt not in FORMATS:
        raise PipelineError(f"--format {fmt!r}: choose from {', '.join(FORMATS)}")
    if split not in SPLITS:
        raise PipelineError(f"--split {split!r}: not one of {', '.join(SPLITS)}")
    if fmt == "parquet":
        _check_parquet()
    if _is_ensemble(run_dir):
        output, source, mask, metrics = _ensemble_source(run_dir, split, output, manifests)
    else:
        run = read_run(run_dir)
        metrics = run.record.to_json()
        output = output or run.record.primary
        if output not in run.record.outputs:
            raise PipelineError(f"{run_dir}: no output {output!r} (outputs:"
                                f" {', '.join(run.record.outputs)})")
        source, mask = prediction_path(run_dir, split, output), face_mask_path(run_dir, split)
    if not source.is_file():
        raise PipelineError(f"{source}: no such predictions file ({split} was not predicted?)")
    manifest_dir = _manifests(run_dir, Path(manifests) if manifests else None)
    try:
        clips = load_clips(manifest_dir, [split])
    except (FileNotFoundError, ValueError) as e:
        raise PipelineError(str(e)) from None
    if not mask.is_file():
        raise PipelineError(f"{mask}: no such face mask file")
    predictions, faces = Predictions(source), Predictions(mask)
    check_clip_set(predictions, clips, split)
    clips = [c for c in clips if c.clip_id in predictions]
    target = Path(out) if out else Path(f"{run_dir.resolve().name}.{split}.{output}.{fmt}")
    metadata = provenance(run_dir, metrics, output, split, manifest_dir)
    progress(ProgressEvent("export", total=len(clips)))
    rows = 0
    with io.atomic_path(target) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="") if fmt == "csv" else \
                contextlib.nullcontext() as file:  # (the Parquet writer opens its own file)
            writer = (_CsvWriter(file, predictions.classes, metadata) if fmt == "csv"
                      else _ParquetWriter(tmp, predictions.classes, metadata))
            for clip in clips:  # clip by clip: memory does not grow with the split
                face = np.asarray(faces[clip.clip_id], dtype=bool)
                writer.write(clip.clip_id, _columns(clip, clip_probs(predictions, clip, split), face))
                rows += clip.n_frames
                progress(ProgressEvent("export", advance=1))
            writer.close()
    return ExportResult(target, output, len(clips), rows)
