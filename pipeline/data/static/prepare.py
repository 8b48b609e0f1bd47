"""Write a static dataset as a manifest directory that ``finetune --manifests`` reads unchanged.

Each image becomes one labelled frame: its face crop (the box cut out, clipped to the image;
FER2013's grey pixels as RGB) is written as ``frames/<clip>/NNNNN.jpg`` (JPEG quality 95), and
the images of a split are grouped, in an order fixed by a hash of their names (so classes mix),
into clips of at most :data:`MAX_CHUNK` frames (fewer for small sets, so that every split has
about :data:`CHUNKS` clips: the fine-tune's train-dev slice holds out whole clips). Clips are
``<dataset>_<split>_NNNNN`` with fps 1 and no video or audio.

``STORE/`` receives ``train.jsonl``, ``val.jsonl``, ``test.jsonl``, ``au_only.jsonl`` (empty),
``images.tsv`` (clip, frame, source image, class: which image each frame is) and ``report.json``
(the reader's counts, unmapped classes and rejections, plus images that could not be decoded or
whose box lies outside them). The whole folder is written aside and published by one rename
(:func:`pipeline.io.staged_folder`). ``report.json`` carries a digest of the annotation files and
of this layout: a rerun on the same files leaves the store as it is.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline import io
from pipeline.data.manifest import AU_ONLY, Clip, write_manifest
from pipeline.data.media import MediaError, read_image
from pipeline.data.static import read
from pipeline.data.static.common import STATIC_SPLITS, StaticImage, StaticReading
from pipeline.errors import PipelineError

LAYOUT = 1  # bump when what prepare writes changes (the digest then differs)
MAX_CHUNK = 500
CHUNKS = 50
QUALITY = 95


@dataclass
class Prepared:
    store: Path
    reading: StaticReading
    report: dict
    already: bool  # the store was complete for the same files: nothing written


def digest(reading: StaticReading) -> str:
    """sha256 of the dataset name, :data:`LAYOUT` and the annotation files' bytes."""
    h = hashlib.sha256(f"{reading.dataset}\0{LAYOUT}\0".encode())
    for source in reading.sources:
        h.update(source.encode() + b"\0")
        with open(source, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def chunk_size(n: int) -> int:
    return max(1, min(MAX_CHUNK, math.ceil(n / CHUNKS)))


def face(image: StaticImage) -> Image.Image:
    """The image's face crop, RGB; MediaError naming the file when it cannot be decoded or its box
    lies outside the image."""
    if image.pixels is not None:
        return Image.fromarray(image.pixels).convert("RGB")
    picture = read_image(image.path)
    if image.box is None:
        return picture
    left, top, right, bottom = image.box
    box = (max(0, left), max(0, top), min(picture.width, right), min(picture.height, bottom))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise MediaError(f"{image.path}: face box {image.box} lies outside the "
                         f"{picture.width}x{picture.height} image")
    return picture.crop(box)


def _order(images: list[StaticImage]) -> list[StaticImage]:
    return sorted(images, key=lambda i: (hashlib.sha1(i.name.encode()).hexdigest(), i.name))


def prepare(name: str, root: str | Path, store: str | Path, write: bool = True) -> Prepared:
    """Read dataset ``name`` at ``root`` and write it into ``store`` (see the module doc).
    ``write=False``: only accept a store already complete for the same files (a DDP process
    must not race another to write it)."""
    store = Path(store)
    reading = read(name, root)
    if not reading.images:
        first = reading.rejections[0].text() if reading.rejections else "no labelled image"
        raise PipelineError(f"{root}: no usable {name} image ({first})")
    key = digest(reading)
    report_path = store / "report.json"
    if report_path.is_file() and not store.is_symlink():
        try:
            old = json.loads(report_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            old = None
        if isinstance(old, dict) and old.get("digest") == key:
            return Prepared(store, reading, old, already=True)
    if not write:
        raise PipelineError(f"{store}: not prepared from these {name} files; run `fer-pipeline "
                            f"static-data {name}:{root} --out {store}` first (once, not per "
                            "process)")
    with io.staged_folder(store) as staging:
        rows, clips = [], {split: [] for split in STATIC_SPLITS}
        used: list[StaticImage] = []  # the images written (counted in the report)
        for split in STATIC_SPLITS:
            images = _order([i for i in reading.images if i.split == split])
            size, kept = chunk_size(len(images)), 0
            labels: list[int] = []
            for image in images:
                try:
                    crop = face(image)
                except MediaError as e:  # its message is "PATH: reason"
                    reason = str(e).removeprefix(f"{image.path}: ")
                    reading.reject(image.path, None, "bad_image", reason)
                    continue
                clip_id = f"{name}_{split}_{kept // size:05d}"
                folder = staging / "frames" / clip_id
                folder.mkdir(parents=True, exist_ok=True)
                crop.save(folder / f"{kept % size + 1:05d}.jpg", format="JPEG", quality=QUALITY)
                rows.append(f"{clip_id}\t{kept % size}\t{image.name}\t{image.label}")
                labels.append(image.label)
                kept += 1
                used.append(image)
            for start in range(0, kept, size):
                clip_id = f"{name}_{split}_{start // size:05d}"
                part = np.array(labels[start:start + size], dtype=np.int8)
                frames = str(store.resolve() / "frames" / clip_id)  # where it is published
                clips[split].append(Clip(clip_id, split, clip_id, len(part), 1.0, frames, None,
                                         None, part))
        reading.images = used
        for split in STATIC_SPLITS:
            write_manifest(staging / f"{split}.jsonl", clips[split])
        write_manifest(staging / f"{AU_ONLY}.jsonl", [])
        (staging / "images.tsv").write_text("clip\tframe\timage\tclass\n" +
                                            "".join(r + "\n" for r in rows), encoding="utf-8")
        report = {**reading.report(), "digest": key, "layout": LAYOUT,
                  "frames": {s: sum(c.n_frames for c in clips[s]) for s in STATIC_SPLITS},
                  "clips": {s: len(clips[s]) for s in STATIC_SPLITS}}
        (staging / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return Prepared(store, reading, report, already=False)
