"""The weights folder ``fer-pipeline finetune`` writes and every extractor loads unchanged.

A folder in the HuggingFace layout (what :func:`pipeline.features.extractors.checkpoints.
resolve_folder` reads), plus the record of how the weights were made::

    DIR/model.safetensors   the backbone's state dict (timm names for timm models; XVector's for
                            tdnn; IResNet's for iresnet; transformers' for hf_audio, whose folder
                            also holds config.json and preprocessor_config.json)
    DIR/finetune.json       a WeightsRecord (below), written last

The record says what the weights saw (manifest fingerprint, the clip ids that trained and the ones
that selected the epoch, the config, the selection split and score, the epoch, the initial
weights' sha256) and the **preprocessing** they were trained with, which the extractor applies by
itself so that stage one feeds the network what it learnt on:

* timm family (``timm``, ``swin``): ``input_size``, ``mean``, ``std``, ``crop_pct``,
  ``interpolation`` (timm's data-config names); an option the user sets explicitly still wins;
* ``tdnn``: ``frontend`` (the log-mel config), ``mean_norm`` and ``cmn_seconds``;
* ``iresnet``: its fixed input (checked); ``swin_audio``: ``frontend`` and the image statistics;
  ``hf_audio``: the window it was trained on (its rate and normalisation are in
  ``preprocessor_config.json``, which the extractor reads).

The record holds the weights file's sha256 and is read only when it matches, so a record never
describes other weights than those beside it. Stage one's cache key hashes the whole folder
(:func:`sha256_file`), record included: features of two
fine-tunes never mix. The folder is written file by file through atomic moves, record last: a
crash leaves either the previous complete folder or one without a valid record (refused).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.errors import PipelineError

RECORD_NAME = "finetune.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = 1


@dataclass
class WeightsRecord:
    """What a fine-tuned weights folder was trained on and with (see the module docstring)."""

    family: str  # "timm" (timm/swin extractors) or "tdnn": which extractors may load it
    model: str  # the timm model name, or "xvector" for tdnn
    preprocessing: dict[str, Any]  # what the extractor applies (see the module docstring)
    weights_sha256: str  # sha256 of model.safetensors beside the record
    manifest_fingerprint: str  # pipeline.data.manifest.fingerprint of the clips read (train split)
    clips: dict[str, list[str]]  # "train": clip ids that trained, "dev": clip ids that selected
    config: dict[str, Any]  # the fine-tune's config, as saved
    selected_on: str  # "train-dev": where the epoch was chosen
    selection_score: float  # macro-F1 on the selection frames at the chosen epoch
    epoch: int  # the chosen epoch (1-based)
    epochs_run: int  # epochs trained in total
    initial_weights: str | None  # the file the fine-tune started from (None: seeded random)
    initial_weights_sha256: str | None
    leakage: dict[str, Any] = field(default_factory=dict)  # the guard as the manifests record it
    format: int = FORMAT

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> "WeightsRecord":
        names = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if not isinstance(data, dict) or not required <= set(data):
            missing = sorted(required - set(data)) if isinstance(data, dict) else ["everything"]
            raise PipelineError(f"{where}: not a weights record (missing {', '.join(missing)})")
        if data.get("format", FORMAT) > FORMAT:
            raise PipelineError(f"{where}: record format {data['format']} is newer than this "
                                f"fer-pipeline reads ({FORMAT}); upgrade")
        return cls(**{k: v for k, v in data.items() if k in names})


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file; of a folder (HF layout): of its files' relative names and hashes."""
    if Path(path).is_dir():
        files = sorted(p for p in Path(path).rglob("*") if p.is_file() and ".git" not in p.parts)
        listing = "".join(f"{p.relative_to(path).as_posix()}\0{sha256_file(p)}\n" for p in files)
        return hashlib.sha256(listing.encode()).hexdigest()
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def record_path(folder: str | Path) -> Path:
    return Path(folder) / RECORD_NAME


def read_record(weights: str | Path | None) -> WeightsRecord | None:
    """The record of a weights folder, verified against the weights beside it; None for a file,
    a folder without a record, or no weights at all."""
    if weights is None or not Path(weights).is_dir() or not record_path(weights).exists():
        return None
    path = record_path(weights)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable weights record ({e})") from None
    record = WeightsRecord.from_json(data, str(path))
    file = Path(weights) / WEIGHTS_NAME
    if not file.is_file():
        raise PipelineError(f"{weights}: has a record but no {WEIGHTS_NAME}")
    if sha256_file(file) != record.weights_sha256:
        raise PipelineError(f"{file}: its sha256 differs from the one {RECORD_NAME} records "
                            "(weights replaced or half written); fine-tune again")
    return record


def check_family(record: WeightsRecord | None, family: str, model: str, where: Any) -> None:
    """Refuse a record written for another extractor family or model."""
    if record is None:
        return
    if record.family != family or record.model != model:
        raise PipelineError(f"{where}: fine-tuned {record.family} {record.model!r} weights, not "
                            f"{family} {model!r}; set the extractor's model to {record.model!r}")


def write_weights_folder(folder: str | Path, state: dict[str, Any], record: WeightsRecord) -> Path:
    """Write ``state`` as ``model.safetensors`` and then ``record`` (its sha256 filled in).

    Each file is written aside and moved into place; the record goes last and names the weights'
    hash, so a reader never takes a half-replaced folder for a complete one.
    """
    from safetensors.torch import save_file

    folder = start_folder(folder)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with io.atomic_path(folder / WEIGHTS_NAME) as tmp:
        save_file(tensors, str(tmp))
    return finish_folder(folder, record)


def start_folder(folder: str | Path) -> Path:
    """Create ``folder`` and remove its record first: the old record must not vouch for the new
    weights about to be written (:func:`write_weights_folder`; HuggingFace folders write their
    files themselves between this and :func:`finish_folder`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record_path(folder).unlink(missing_ok=True)
    return folder


def finish_folder(folder: Path, record: WeightsRecord) -> Path:
    """Write ``record``, with the sha256 of the ``model.safetensors`` now in ``folder``, last."""

    record = dataclasses.replace(record, weights_sha256=sha256_file(folder / WEIGHTS_NAME))
    io.write_json(record_path(folder), record.to_json())
    return folder


# ---- applying the recorded preprocessing -------------------------------------------------------

IMAGE_KEYS = ("input_size", "mean", "std", "crop_pct", "interpolation")


def image_data_config(base: dict[str, Any], record: WeightsRecord | None) -> dict[str, Any]:
    """timm's eval data config: the model's own (``base``), then the record's preprocessing.

    The caller applies the user's explicit options after this (they win over the record)."""
    config = dict(base)
    if record is not None:
        for key in IMAGE_KEYS:
            value = record.preprocessing.get(key)
            if value is not None:
                config[key] = tuple(value) if isinstance(value, list) else value
    return config
