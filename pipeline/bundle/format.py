"""The pipeline folder's format: plain files, a format version, and a sha256 manifest verified on load.

A bundle is a folder of JSON, TOML-free plain text and safetensors (no pickle anywhere)::

    PIPELINE/
      bundle.json           format name and version, classes, AU names, members, the ensemble's
                            fitted decisions, extractors, the face step (see pipeline.bundle.build)
      MODEL_CARD.md         what it was trained on, its val score, how it was selected, warnings
      heads/<run>/          config.json (the run's FuseConfig), dims.json, weights.safetensors
      extractors/<name>/    the extractor's weights, copied (a file, or a fine-tune folder)
      MANIFEST.sha256       "<sha256>  <relative path>" for every other file, written last

**Version policy.** ``FORMAT_VERSION`` is an integer raised whenever a reader of the old version
would misread a new bundle. A reader accepts exactly the versions it knows
(``READABLE_VERSIONS``) and refuses any other in one line naming the folder and both versions,
so a newer bundle is never half-understood by an older tool; a new tool keeps reading the old
versions it lists. Adding optional keys that old readers may ignore does not raise the version.
Version 2 adds ``va_decisions`` (stage three's VA weights and smoothing windows): a version-1
reader would ignore them and average the VA heads equally, a different answer, so a bundle that
has them is written as version 2; every other bundle is still written as version 1, which older
tools read whole (:func:`version_for`).

The folder is written aside (``PIPELINE.partial-<pid>``) and renamed into place whole; a crash
leaves no half bundle under the final name. Loading verifies every file against the manifest
and refuses a file the manifest does not list, or one it lists that is missing or changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pipeline.errors import PipelineError

FORMAT = "fer-pipeline-bundle"
FORMAT_VERSION = 2  # the newest this tool writes
READABLE_VERSIONS = (1, 2)
BUNDLE_JSON = "bundle.json"
MANIFEST = "MANIFEST.sha256"
MODEL_CARD = "MODEL_CARD.md"


class BundleError(PipelineError):
    """A pipeline folder that cannot be used: the message names the file and the reason."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    """Every file under ``root`` except the manifest, sorted; a symlink is refused (a bundle is
    self-contained: a link would point outside it)."""
    out = []
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise BundleError(f"{path}: a symbolic link inside a pipeline folder")
        if path.is_file() and path.relative_to(root).as_posix() != MANIFEST:
            out.append(path)
    return out


def write_manifest(root: Path) -> Path:
    """``MANIFEST.sha256`` of every file under ``root`` (the last file written)."""
    lines = [f"{sha256_file(p)}  {p.relative_to(root).as_posix()}\n" for p in _files(root)]
    path = root / MANIFEST
    path.write_text("".join(lines), encoding="utf-8")
    return path


def verify(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file, checked against the manifest; BundleError names the
    first file that is missing, unlisted or changed."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise BundleError(f"{manifest}: missing (not a pipeline folder, or an unfinished one)")
    listed: dict[str, str] = {}
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or name.startswith("/") or ".." in name.split("/"):
            raise BundleError(f"{manifest}: line {number} is not '<sha256>  <relative path>'")
        listed[name] = digest
    present = {p.relative_to(root).as_posix(): p for p in _files(root)}
    for name in sorted(set(present) - set(listed)):
        raise BundleError(f"{root / name}: not in {MANIFEST} (added after the bundle was written)")
    for name, digest in listed.items():
        if name not in present:
            raise BundleError(f"{root / name}: listed in {MANIFEST} but missing")
        if sha256_file(present[name]) != digest:
            raise BundleError(f"{root / name}: sha256 differs from {MANIFEST} (changed or damaged)")
    return listed


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BundleError(f"{path}: cannot read ({' '.join(str(e).split())})") from None


def version_for(record: dict) -> int:
    """The lowest version whose readers understand all of ``record``: 2 with VA decisions, else 1."""
    return 2 if "va_decisions" in record else 1


def check_version(root: Path, record: Any) -> None:
    """Refuse a bundle.json of another format or of a version this reader does not know."""
    where = root / BUNDLE_JSON
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise BundleError(f"{where}: not a {FORMAT} file")
    version = record.get("format_version")
    if version not in READABLE_VERSIONS:
        raise BundleError(f"{where}: bundle format version {version!r}; this fer-pipeline reads"
                          f" version(s) {', '.join(map(str, READABLE_VERSIONS))} (a newer"
                          " bundle needs a newer fer-pipeline)")


def open_bundle(path: str | Path) -> tuple[Path, dict]:
    """The verified folder and its ``bundle.json``: the version first (a newer bundle is refused
    before anything else of it is read), then every file's sha256."""
    root = Path(path)
    if not root.is_dir():
        raise BundleError(f"{root}: no such pipeline folder")
    record = read_json(root / BUNDLE_JSON)
    check_version(root, record)
    verify(root)
    return root, record


def publish(staging: Path, out: Path) -> Path:
    """Move a finished staging folder to ``out``; an existing bundle there is replaced (moved
    aside first, removed after), anything else there is refused."""
    if out.is_symlink():
        raise BundleError(f"{out}: a symbolic link; give a plain folder path")
    old = None
    if out.exists():
        if not (out / BUNDLE_JSON).is_file():
            shutil.rmtree(staging, ignore_errors=True)
            raise BundleError(f"{out}: exists and is not a pipeline folder (not replaced)")
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return out


def staging_folder(out: Path) -> Path:
    staging = out.with_name(f"{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging
