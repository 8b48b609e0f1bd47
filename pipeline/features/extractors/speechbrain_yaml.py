"""A SpeechBrain folder's ``hyperparams.yaml`` read without running code from the file.

SpeechBrain builds its models from HyperPyYAML, whose tags call Python: ``!new:X`` constructs
class ``X``, ``!apply:F`` calls any function ``F``, ``!include:`` reads another file, and the
loader it uses (``ruamel.yaml.Loader``) also honours ``!!python/object/apply``. A crafted
``hyperparams.yaml`` can therefore run anything when loaded. So, unless the user trusts code
(``--set trust_code=true``, see docs/trust.md), the file is read by :func:`build_modules` as data
only (ruamel's round-trip parser constructs no object) and interpreted here:

* every tag in the whole file must be one of ``!ref``, ``!copy``, ``!tuple``, or ``!new:``/
  ``!name:`` of a class in :data:`KNOWN_CLASSES` (the classes of SpeechBrain's published speaker
  models: ``spkrec-ecapa-voxceleb``, ``spkrec-xvect-voxceleb``); anything else is refused in one
  line naming the file, the entry and the tag, before anything is built;
* only the entries asked for are built (the classifier, label encoder and pretrainer entries are
  checked but never built), their arguments being plain YAML values or references to them;
* ``!ref`` takes ``<key>`` / ``<key[sub]>`` references, text around them, and HyperPyYAML's own
  arithmetic (a restricted ``ast`` evaluation: numbers and operators only).

With trust the file goes to ``hyperpyyaml.load_hyperpyyaml`` as it is (everything it supports).
The same folder gives the same modules either way (the same classes with the same arguments).
"""

from __future__ import annotations

import copy
import functools
import importlib
import re
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import PipelineError

# The classes a published SpeechBrain speaker folder names. Building one runs only SpeechBrain's
# (or torch's) own constructor with the file's plain arguments.
KNOWN_CLASSES = frozenset({
    "speechbrain.lobes.features.Fbank",
    "speechbrain.processing.features.InputNormalization",
    "speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN",
    "speechbrain.lobes.models.ECAPA_TDNN.Classifier",
    "speechbrain.lobes.models.Xvector.Xvector",
    "speechbrain.lobes.models.Xvector.Classifier",
    "speechbrain.dataio.encoder.CategoricalEncoder",
    "speechbrain.utils.parameter_transfer.Pretrainer",
    "torch.nn.LeakyReLU", "torch.nn.ReLU", "torch.nn.PReLU", "torch.nn.ELU", "torch.nn.GELU",
    "torch.nn.Tanh", "torch.nn.Sigmoid", "torch.nn.BatchNorm1d",
})
PLAIN_TAGS = ("!ref", "!copy", "!tuple")
_CORE = "tag:yaml.org,2002:"  # YAML's own types: str, int, float, bool, null, seq, map
_CORE_TYPES = {"str", "int", "float", "bool", "null", "seq", "map", "omap", "set", "timestamp"}
_REF = re.compile(r"<([^<>]+)>")
_TUPLE = re.compile(r"^\(.*\)$")


class Untrusted(PipelineError):
    """The file needs code to be built: refused unless the user trusts code."""


def refusal(path: Path, what: str) -> Untrusted:
    """The one-line refusal of a file that needs code, naming it and what needs the code."""
    return Untrusted(f"{path}: {what}: building it runs code from the file; refused unless you"
                     " trust this folder: --set trust_code=true (docs/trust.md)")


def _tag(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag)
    return value if isinstance(value, str) else None


def check_tags(path: Path, tree: Any) -> None:
    """Refuse (:class:`Untrusted`) any tag but plain data, references and known classes."""
    def walk(node: Any, where: str) -> None:
        tag = _tag(node)
        if tag is not None and not _allowed(tag):
            raise refusal(path, f"'{where}' has tag {tag[:80]}")
        # Tuples go through PyYAML. Once hyperpyyaml has loaded a file in this process, ruamel
        # resolves "(...)" to a !tuple-tagged scalar instead of a plain string: check both.
        text = getattr(node, "value", node) if tag in (None, "!tuple") else None
        if isinstance(text, str) and _TUPLE.match(text) and "!" in text:
            raise refusal(path, f"'{where}' has a tagged tuple")
        if isinstance(node, dict):
            for key, value in node.items():
                walk(key, where)
                walk(value, f"{where}.{key}" if where else str(key))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]")
    walk(tree, "")


def _allowed(tag: str) -> bool:
    if tag.startswith(_CORE):
        return tag[len(_CORE):] in _CORE_TYPES
    if tag in PLAIN_TAGS:
        return True
    kind, _, target = tag.partition(":")
    return kind in ("!new", "!name") and target in KNOWN_CLASSES


def parse(path: Path) -> Any:
    """The file as plain data (ruamel's round-trip parser: tags kept, nothing constructed)."""
    import ruamel.yaml

    try:
        return ruamel.yaml.YAML(typ="rt").load(path.read_text(encoding="utf-8"))
    except Exception as e:  # ruamel raises many types for bad YAML
        raise PipelineError(f"{path}: not readable YAML ({' '.join(str(e).split())[:200]})") from None


class _Builder:
    """Builds entries of a checked tree: references resolved, known classes constructed."""

    def __init__(self, path: Path, tree: dict) -> None:
        self.path, self.tree, self.active = path, tree, []

    def fail(self, what: str) -> PipelineError:
        return PipelineError(f"{self.path}: {what}")

    def lookup(self, ref: str) -> Any:
        if ref in self.active:
            raise self.fail(f"reference <{ref}> refers to itself")
        node: Any = self.tree
        for part in ref.split("["):
            part = part.strip("]").strip()
            if not isinstance(node, dict) or part not in node:
                raise self.fail(f"reference <{ref}> names no entry")
            node = node[part]
        self.active.append(ref)
        try:
            return self.value(node)
        finally:
            self.active.pop()

    def reference(self, text: str, copied: bool) -> Any:
        text = str(text).strip()
        whole = _REF.fullmatch(text)
        if whole:
            value = self.lookup(whole.group(1))
            return copy.deepcopy(value) if copied else value
        pieces = [str(self.lookup(m.group(1))) for m in _REF.finditer(text)]
        filled = _REF.sub(lambda m, it=iter(pieces): next(it), text)
        from hyperpyyaml.core import parse_arithmetic  # a restricted ast evaluation, runs nothing

        return parse_arithmetic(filled)

    def value(self, node: Any) -> Any:
        tag = _tag(node)
        if tag in ("!ref", "!copy"):
            return self.reference(getattr(node, "value", node), copied=tag == "!copy")
        if tag == "!tuple" or (tag is None and isinstance(node, str) and _TUPLE.match(node)):
            return tuple(yaml.safe_load("[" + str(getattr(node, "value", node))[1:-1] + "]"))
        if tag is not None and tag.startswith(("!new:", "!name:")):
            return self.construct(tag, node)
        if isinstance(node, dict):
            return {str(k): self.value(v) for k, v in node.items()}
        if isinstance(node, list):
            return [self.value(v) for v in node]
        for kind in (bool, int, float, str):  # ruamel's scalar subclasses -> plain values
            if isinstance(node, kind):
                return kind(node)
        return None if node is None else node

    def construct(self, tag: str, node: Any) -> Any:
        kind, _, target = tag.partition(":")
        module, _, name = target.rpartition(".")
        cls = getattr(importlib.import_module(module), name)  # target is in KNOWN_CLASSES
        if isinstance(node, dict):
            raw = self.value(dict(node))
            args, kwargs = (raw["_args"], raw["_kwargs"]) if set(raw) == {"_args", "_kwargs"} \
                else ([], raw)
        elif isinstance(node, list):
            args, kwargs = self.value(list(node)), {}
        else:
            args, kwargs = [], {}
        if kind == "!name":
            return functools.partial(cls, *args, **kwargs) if args or kwargs else cls
        try:
            return cls(*args, **kwargs)
        except Exception as e:  # a constructor refusing the file's arguments
            raise self.fail(f"cannot build {target} ({' '.join(str(e).split())[:160]})") from None


def build_modules(path: Path, keys: tuple[str, ...], trust_code: bool) -> dict[str, Any]:
    """Entries ``keys`` of the HyperPyYAML file ``path``, built; one line naming the file when
    it is bad, or (without ``trust_code``) when building it would run code from the file."""
    if trust_code:
        from hyperpyyaml import load_hyperpyyaml

        try:
            with open(path, encoding="utf-8") as f:
                hparams = load_hyperpyyaml(f)
        except Exception as e:  # yaml and SpeechBrain raise many types
            raise PipelineError(f"{path}: cannot build ({' '.join(str(e).split())[:200]})") from None
    else:
        tree = parse(path)
        if not isinstance(tree, dict):
            raise PipelineError(f"{path}: not a mapping of entries")
        check_tags(path, tree)
        builder = _Builder(path, tree)
        hparams = {k: builder.value(tree[k]) for k in keys if k in tree}
    if not isinstance(hparams, dict) or any(k not in hparams for k in keys):
        raise PipelineError(f"{path}: needs {', '.join(keys)} (an EncoderClassifier's yaml)")
    return {k: hparams[k] for k in keys}
