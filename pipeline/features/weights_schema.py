"""The schema of a weights record (``finetune.json``): every key, its type and its range.

:func:`check_record_json` runs on the parsed JSON before anything of it is used, and refuses a
record that breaks a rule in one line naming the file and the key (``FILE: preprocessing.mean:
...``). The rules, stated in docs/weights-records.md:

* the top-level keys of :class:`~pipeline.features.weights_record.WeightsRecord`, each required
  except ``leakage``, ``format`` and ``dan_heads_sha256`` (only a ``head = "dan"`` fine-tune's); an **unknown key is refused** (a typo would otherwise be
  ignored silently, and a newer record announces itself by ``format``);
* ``preprocessing`` holds exactly the keys of its family (:data:`PREPROCESSING`), each required:
  a record missing one would let the model's default stand in for what the weights learnt on;
* images: ``input_size`` ``[3, H, W]`` with ``MIN_SIDE <= H, W <= MAX_SIDE``; ``mean`` and ``std``
  three finite numbers, ``std`` > 0; ``crop_pct`` in ``CROP_PCT`` (every timm model's lies in
  0.875..1.15); ``interpolation`` one of :data:`INTERPOLATIONS`.

Nothing here imports torch or an extractor at module level (extractors import the record).
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable


# Smallest and largest image side a record may ask for. 32: a network that downsamples by 32 (a
# ResNet, a Swin) still has one cell of features; below it its pooling sees padding, not a face.
MIN_SIDE = 32
MAX_SIDE = 4096
CROP_PCT = (0.5, 1.25)  # the centre-crop share timm resizes by (timm's own models: 0.875 to 1.15)
INTERPOLATIONS = ("bilinear", "bicubic", "nearest", "lanczos", "box", "hamming")  # PIL's
MEAN_NORMS = ("sliding", "window", "none")  # tdnn's cepstral mean normalisation
PURITY_RULES = ("window", "labelled")  # swin_audio's window purity rule (training.windows)
SHA256 = re.compile(r"[0-9a-f]{64}")


class RecordError(ValueError):
    """A rule of the schema broken: ``key`` (dotted) and the reason."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")


def _number(key: str, value: Any, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RecordError(key, f"{value!r} is not a finite number")
    if low is not None and (value < low or (low_open and value == low)):
        raise RecordError(key, f"{value!r} must be {'>' if low_open else '>='} {low}")
    if high is not None and value > high:
        raise RecordError(key, f"{value!r} must be <= {high}")
    return float(value)


def _integer(key: str, value: Any, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise RecordError(key, f"{value!r} is not an integer")
    if low is not None and value < low:
        raise RecordError(key, f"{value!r} must be >= {low}")
    return value


def _string(key: str, value: Any, choices: tuple[str, ...] | None = None) -> str:
    if not isinstance(value, str):
        raise RecordError(key, f"{value!r} is not a string")
    if choices is not None and value not in choices:
        raise RecordError(key, f"{value!r}: choose from {', '.join(choices)}")
    return value


def _optional_string(key: str, value: Any) -> None:
    if value is not None:
        _string(key, value)


def _table(key: str, value: Any) -> dict:
    if not isinstance(value, dict):
        raise RecordError(key, f"is a {type(value).__name__}, not a table")
    return value


def _input_size(key: str, value: Any) -> None:
    if not isinstance(value, list) or len(value) != 3:
        raise RecordError(key, f"{value!r}: need [3, height, width]")
    channels, height, width = (_integer(f"{key}[{i}]", v) for i, v in enumerate(value))
    if channels != 3:
        raise RecordError(key, f"{value!r}: the images are RGB, need 3 channels")
    for side in (height, width):
        if not MIN_SIDE <= side <= MAX_SIDE:
            raise RecordError(key, f"{value!r}: each side must be {MIN_SIDE} to {MAX_SIDE} pixels")


def _triple(key: str, value: Any, positive: bool = False) -> None:
    if not isinstance(value, list) or len(value) != 3:
        raise RecordError(key, f"{value!r}: need 3 numbers (one per RGB channel)")
    for i, v in enumerate(value):
        _number(f"{key}[{i}]", v, 0.0 if positive else None, low_open=positive)


def _crop_pct(key: str, value: Any) -> None:
    _number(key, value, *CROP_PCT)


def _interpolation(key: str, value: Any) -> None:
    _string(key, value, INTERPOLATIONS)


def _frontend(key: str, value: Any) -> None:
    """A table of option names to plain values; the extractor builds its log-mel config from it
    (:func:`pipeline.features.weights_record.recorded_frontend` names this key when that fails)."""
    _table(key, value)
    for name, v in value.items():
        if not isinstance(v, (str, int, float, bool, type(None), list)):
            raise RecordError(f"{key}.{name}", f"{v!r} is not a plain value")


def _positive_int(key: str, value: Any) -> None:
    _integer(key, value, 1)


def _purity(key: str, value: Any) -> None:
    if value is not None:
        _number(key, value, 0.0, 1.0)


def _bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise RecordError(key, f"{value!r} is not true or false")


def _int_list(key: str, value: Any) -> None:
    if not isinstance(value, list) or not value:
        raise RecordError(key, f"{value!r}: need a list of layer numbers")
    for i, v in enumerate(value):
        _integer(f"{key}[{i}]", v)


_IMAGE = {"input_size": _input_size, "mean": _triple,
          "std": lambda k, v: _triple(k, v, positive=True)}

# The preprocessing keys of each family (what pipeline.finetune's backbones write) and their rules.
PREPROCESSING: dict[str, dict[str, Callable[[str, Any], None]]] = {
    "timm": {**_IMAGE, "crop_pct": _crop_pct, "interpolation": _interpolation},
    "iresnet": {**_IMAGE, "interpolation": _interpolation, "depth": _positive_int},
    "tdnn": {"frontend": _frontend, "mean_norm": lambda k, v: _string(k, v, MEAN_NORMS),
             "cmn_seconds": lambda k, v: _number(k, v, 0.0, low_open=True),
             "window": _positive_int},
    "swin_audio": {**_IMAGE, "frontend": _frontend, "window": _positive_int, "purity": _purity,
                   "purity_rule": lambda k, v: _string(k, v, PURITY_RULES)},
    "hf_audio": {"sampling_rate": _positive_int, "do_normalize": _bool, "window": _positive_int,
                 "layers": _int_list, "combine": _string, "train_layers": _positive_int},
}


def _clips(key: str, value: Any) -> None:
    _table(key, value)
    for part in ("train", "dev"):
        ids = value.get(part)
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise RecordError(f"{key}.{part}", "need a list of clip ids")


def _sha256(key: str, value: Any) -> None:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise RecordError(key, f"{value!r} is not a sha256 (64 lowercase hex digits)")


def _optional_sha256(key: str, value: Any) -> None:
    if value is not None:
        _sha256(key, value)


# The top-level keys and their rules; those with a default may be absent.
TOP_LEVEL: dict[str, Callable[[str, Any], None]] = {
    "family": lambda k, v: _string(k, v, tuple(PREPROCESSING)),
    "model": _string,
    "preprocessing": _table,
    "weights_sha256": _sha256,
    "manifest_fingerprint": _string,
    "clips": _clips,
    "config": _table,
    "selected_on": lambda k, v: _string(k, v, ("train-dev", "val")),
    "selection_score": lambda k, v: _number(k, v, 0.0, 1.0),
    "epoch": _positive_int,
    "epochs_run": _positive_int,
    "initial_weights": _optional_string,
    "initial_weights_sha256": _optional_sha256,
    "leakage": _table,
    "format": _positive_int,
    "dan_heads_sha256": _optional_sha256,
}
OPTIONAL = ("leakage", "format", "dan_heads_sha256")


def check_record_json(data: Any, newest_format: int) -> None:
    """Raise :class:`RecordError` naming the first key of ``data`` (a parsed ``finetune.json``)
    that breaks the schema (see the module docstring)."""
    if not isinstance(data, dict):
        raise RecordError("(top level)", f"is a {type(data).__name__}, not a table")
    if "format" in data:
        _positive_int("format", data["format"])
        if data["format"] > newest_format:
            raise RecordError("format", f"{data['format']} is newer than this fer-pipeline reads "
                                        f"({newest_format}); upgrade")
    missing = sorted(k for k in TOP_LEVEL if k not in data and k not in OPTIONAL)
    if missing:
        raise RecordError(missing[0], "missing (not a weights record?)")
    unknown = sorted(k for k in data if k not in TOP_LEVEL)
    if unknown:
        raise RecordError(unknown[0], "unknown key")
    for key, check in TOP_LEVEL.items():
        if key in data:
            check(key, data[key])
    if data["epoch"] > data["epochs_run"]:
        raise RecordError("epoch", f"{data['epoch']} is after epochs_run {data['epochs_run']}")
    rules = PREPROCESSING[data["family"]]
    pre = data["preprocessing"]
    for key in sorted(rules):
        if key not in pre:
            raise RecordError(f"preprocessing.{key}", f"missing (a {data['family']} record "
                                                      f"has {', '.join(sorted(rules))})")
    for key in sorted(pre):
        if key not in rules:
            raise RecordError(f"preprocessing.{key}", f"unknown key for family {data['family']}")
        rules[key](f"preprocessing.{key}", pre[key])
