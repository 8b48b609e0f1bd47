"""The weights folder ``fer-pipeline finetune`` writes and every extractor loads unchanged.

A folder in the HuggingFace layout (what :func:`pipeline.features.extractors.checkpoints.
resolve_folder` reads), plus the record of how the weights were made::

    DIR/model.safetensors   the backbone's state dict (timm names for timm models; XVector's for
                            tdnn; IResNet's for iresnet; transformers' for hf_audio, whose folder
                            also holds config.json and preprocessor_config.json)
    DIR/dan_heads.safetensors   only ``finetune --set head=dan``: DAN's heads at the chosen
                            epoch (:class:`pipeline.training.dan.DANHeads`' state dict), which
                            ``fuse --method dan --set head.init_from=DIR`` starts from
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

The record holds the weights file's sha256 (and the DAN heads' in ``dan_heads_sha256``; absent
in a folder without them) and is read only when they match, so a record never
describes other weights than those beside it. Stage one's cache key hashes the whole folder
(:func:`sha256_file`), record included: features of two
fine-tunes never mix.

**Checked before use.** The record is validated against its schema
(:mod:`pipeline.features.weights_schema`): a bad key is one line naming the file and the key.

**Published whole.** The folder is written into a sibling staging folder and renamed into place
(:func:`pipeline.io.staged_folder`): ``DIR`` holds the previous complete folder or the new one,
never weights without their record. A folder without a record beside a fine-tune's working folder
``DIR.train/`` is a fine-tune's unfinished output (an older version's kill) and is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline import io
from pipeline.errors import PipelineError
from pipeline.features.weights_schema import RecordError, check_record_json

RECORD_NAME = "finetune.json"
WEIGHTS_NAME = "model.safetensors"
DAN_HEADS_NAME = "dan_heads.safetensors"
FORMAT = 1
# The files a weights folder may hold (hf_audio's also config.json and preprocessor_config.json):
# an existing folder holding anything else is not replaced (it is not a weights folder).
FOLDER_FILES = (WEIGHTS_NAME, RECORD_NAME, "config.json", "preprocessor_config.json",
                DAN_HEADS_NAME)


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
    dan_heads_sha256: str | None = None  # sha256 of dan_heads.safetensors (head = "dan" only)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        if data["dan_heads_sha256"] is None:  # left out: records without DAN heads stay as before
            del data["dan_heads_sha256"]
        return data

    @classmethod
    def from_json(cls, data: Any, where: str) -> "WeightsRecord":
        """The record of ``data`` (a parsed ``finetune.json``), checked against its schema
        (:mod:`pipeline.features.weights_schema`); ``where`` names the file in the error."""
        try:
            check_record_json(data, FORMAT)
        except RecordError as e:
            raise PipelineError(f"{where}: {' '.join(str(e).split())}") from None
        return cls(**data)


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


def train_dir(folder: str | Path) -> Path:
    """``DIR.train``: the working folder of the fine-tune that writes ``DIR``."""
    folder = Path(folder)
    return folder.with_name(folder.name + ".train")


def read_record(weights: str | Path | None) -> WeightsRecord | None:
    """The record of a weights folder, checked against its schema and verified against the
    weights beside it; None for a file, a folder without a record, or no weights at all.

    A folder without a record beside a fine-tune's working folder (``DIR.train/``) is refused:
    it is a fine-tune's output without its record, not a plain weights folder."""
    if weights is None or not Path(weights).is_dir():
        return None
    path = record_path(weights)
    if not path.exists():
        if train_dir(weights).is_dir():
            raise PipelineError(f"{weights}: weights without their {RECORD_NAME} beside a "
                                f"fine-tune's working folder {train_dir(weights).name}/ (an "
                                "unfinished fine-tune); rerun the finetune command to finish it")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable weights record ({' '.join(str(e).split())})"
                            ) from None
    record = WeightsRecord.from_json(data, str(path))
    file = Path(weights) / WEIGHTS_NAME
    if not file.is_file():
        raise PipelineError(f"{weights}: has a record but no {WEIGHTS_NAME}")
    if sha256_file(file) != record.weights_sha256:
        raise PipelineError(f"{file}: its sha256 differs from the one {RECORD_NAME} records "
                            "(weights replaced or half written); fine-tune again")
    heads = Path(weights) / DAN_HEADS_NAME
    if record.dan_heads_sha256 is not None and not heads.is_file():
        raise PipelineError(f"{weights}: its {RECORD_NAME} records DAN heads but there is no "
                            f"{DAN_HEADS_NAME}; fine-tune again")
    if record.dan_heads_sha256 is not None and sha256_file(heads) != record.dan_heads_sha256:
        raise PipelineError(f"{heads}: its sha256 differs from the one {RECORD_NAME} records "
                            "(replaced or half written); fine-tune again")
    if record.dan_heads_sha256 is None and heads.exists():
        raise PipelineError(f"{heads}: not recorded in {RECORD_NAME} (not written by the fine-tune"
                            "); remove it or fine-tune again")
    return record


def read_dan_heads(folder: str | Path) -> dict[str, Any]:
    """The DAN heads' state dict of a ``head = "dan"`` fine-tune's weights folder, read from the
    bytes whose sha256 was checked against the record; one line naming the folder when it holds
    none (a ``head = "linear"`` fine-tune, or one written before the heads were kept)."""
    from safetensors.torch import load as load_tensors

    if not Path(folder).is_dir():
        raise PipelineError(f"{folder}: no such weights folder (give the folder `finetune --set "
                            "head=dan` wrote)")
    record = read_record(folder)
    if record is None:
        raise PipelineError(f"{folder}: not a fine-tuned weights folder (no {RECORD_NAME}); give "
                            "the folder `finetune --set head=dan` wrote")
    if record.dan_heads_sha256 is None:
        raise PipelineError(f"{folder}: holds no DAN heads ({RECORD_NAME} records none: a "
                            "head=linear fine-tune, or one written before they were kept); "
                            "fine-tune with --set head=dan (or --preset jeong2022)")
    data = (Path(folder) / DAN_HEADS_NAME).read_bytes()
    if hashlib.sha256(data).hexdigest() != record.dan_heads_sha256:  # changed since read_record
        raise PipelineError(f"{Path(folder) / DAN_HEADS_NAME}: its sha256 differs from the one "
                            f"{RECORD_NAME} records; fine-tune again")
    try:
        return load_tensors(data)
    except Exception as e:  # safetensors' own errors: say which file
        raise PipelineError(f"{Path(folder) / DAN_HEADS_NAME}: unreadable ({e})") from None


def recorded_frontend(record: WeightsRecord, weights: Any, config_class: type) -> Any:
    """The record's ``preprocessing.frontend`` as ``config_class`` (the log-mel config; passed in:
    extractors import this module), a bad value named by file and key."""
    from pipeline.config import from_dict

    key = "preprocessing.frontend"
    try:
        return from_dict(config_class, record.preprocessing["frontend"], key)
    except (ValueError, TypeError, PipelineError) as e:
        reason = " ".join(str(e).split())
        reason = reason[len(key) + 2:] if reason.startswith(key + ": ") else reason
        raise PipelineError(f"{record_path(weights)}: {key}: {reason}") from None


def check_family(record: WeightsRecord | None, family: str, model: str, where: Any) -> None:
    """Refuse a record written for another extractor family or model, saying what the record
    holds, what the command asked for, and the change that loads it."""
    if record is None or (record.family == family and record.model == model):
        return
    if record.family != family:
        name = record.family
        fix = (f"load it with `extract -e {name} --weights {name}={where}` (or start a fine-tune "
               f"from it with `finetune --backbone {name}`)")
    else:
        fix = f"set the model to {record.model!r} (extract: configs.NAME.model; finetune: --model)"
    raise PipelineError(f"{where}: its {RECORD_NAME} records {record.family} weights of model "
                        f"{record.model!r}, but this command asked for {family} model {model!r}; "
                        f"{fix}")


def check_replaceable(folder: str | Path) -> None:
    """Refuse to write a weights folder over a folder that is not one (it would be replaced
    whole): one without a record that holds anything but :data:`FOLDER_FILES`."""
    folder = Path(folder)
    if folder.is_symlink():
        raise PipelineError(f"{folder}: is a symlink; give the folder itself")
    if folder.exists() and not folder.is_dir():
        raise PipelineError(f"{folder}: exists and is not a folder; choose another --out")
    if folder.is_dir() and not record_path(folder).is_file():
        others = sorted(p.name for p in folder.iterdir() if p.name not in FOLDER_FILES)
        if others:
            raise PipelineError(f"{folder}: holds {', '.join(others[:3])}, not a weights folder's "
                                "files; choose another --out (nothing was replaced)")


def publish_weights_folder(folder: str | Path, record: WeightsRecord,
                           write: Callable[[Path], None]) -> Path:
    """Write a whole weights folder: ``write(staging)`` puts the weights (and any other files)
    into a sibling staging folder, the record (with the weights' sha256) follows, and the
    staging folder is renamed into place (:func:`pipeline.io.staged_folder`): ``folder`` holds
    the old complete folder or the new one, never weights without a record."""
    folder = Path(folder)
    check_replaceable(folder)
    with io.staged_folder(folder) as staging:
        write(staging)
        heads = staging / DAN_HEADS_NAME
        record = dataclasses.replace(
            record, weights_sha256=sha256_file(staging / WEIGHTS_NAME),
            dan_heads_sha256=sha256_file(heads) if heads.is_file() else None)
        try:  # never write a record that reading would refuse
            check_record_json(json.loads(json.dumps(record.to_json())), FORMAT)
        except RecordError as e:
            raise PipelineError(f"{folder / RECORD_NAME}: not written, {e}") from None
        io.write_json(record_path(staging), record.to_json())
    return folder


def write_weights_folder(folder: str | Path, state: dict[str, Any], record: WeightsRecord,
                         dan_heads: dict[str, Any] | None = None) -> Path:
    """Write ``state`` as ``model.safetensors`` (and ``dan_heads`` as ``dan_heads.safetensors``)
    with ``record`` (their sha256 filled in) as one folder (:func:`publish_weights_folder`)."""
    from safetensors.torch import save_file

    files = {WEIGHTS_NAME: state, **({DAN_HEADS_NAME: dan_heads} if dan_heads is not None else {})}

    def write(staging: Path) -> None:
        for name, tensors in files.items():
            tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
            with io.atomic_path(staging / name) as tmp:
                save_file(tensors, str(tmp))

    return publish_weights_folder(folder, record, write)


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
