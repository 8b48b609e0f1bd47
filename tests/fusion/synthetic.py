"""Tiny feature stores that mimic the demo dataset: the face shows a pair of classes, the audio
which member of the pair, so only a head that fuses both can get most frames right.

Labels are ``2 * pair + member`` with pair segments of 10-40 frames and member segments of 40-80
(as in ``pipeline.data.synthetic``). Image features are one of four prototypes (the pair) plus
noise, zero where a frame has no face; each dynamic-window audio embedding is the mix of two
prototypes in the proportion of the member's frames inside its window, plus noise. Ceilings on
macro-F1: image alone 0.5, audio alone 0.25, fusion about 1.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.labels import NUM_AUS, UNLABELED
from pipeline.data.manifest import Clip, load_clips, write_manifest
from pipeline.features.store import FeatureStore
from pipeline.training.windows import window_bounds

WINDOWS = (32, 48, 64)


@dataclass(frozen=True)
class Synthetic:
    store: Path
    manifests: Path
    clips: list[Clip]


def _segments(rng: np.random.Generator, n: int, low: int, high: int, values: int,
              start: int | None = None) -> np.ndarray:
    track = np.zeros(n, np.int64)
    position, value = 0, int(rng.integers(values)) if start is None else start
    while position < n:
        length = int(rng.integers(low, high + 1))
        track[position:position + length] = value
        position += length
        value = (value + 1) % 2 if values == 2 else int(
            rng.choice([v for v in range(values) if v != value]))
    return track


def make_dataset(root: str | Path, splits: dict[str, int] | None = None, frames: int = 120,
                 image_dim: int = 16, audio_dim: int = 8, noise: float = 0.6, seed: int = 0,
                 faceless: float = 0.05, unlabelled: bool = True, no_audio: tuple[str, ...] = (),
                 token_maps: bool = False, logmel: bool = False) -> Synthetic:
    """Write ``root/features.zarr`` and ``root/manifests`` and return them with the clips.

    ``splits``: clips per split (default 6 train, 3 val, 1 test). ``no_audio``: clip ids stored
    with ``has_audio`` False and no audio arrays. ``token_maps`` adds ``swin_tokens`` [T, 2, 2, D].
    ``logmel`` adds ``logmel`` [T_mel, 16] at 25 rows/s (2.5 per frame): each row is the prototype
    of the member at its time plus noise (drawn from its own generator: the other arrays do not
    change).
    """
    root = Path(root)
    splits = splits or {"train": 6, "val": 3, "test": 1}
    rng = np.random.default_rng(seed)
    image_protos = rng.normal(size=(4, image_dim)) * 1.5
    audio_protos = rng.normal(size=(2, audio_dim)) * 1.5
    mel_rng = np.random.default_rng(seed + 1)
    mel_protos = mel_rng.normal(size=(2, 16)) * 1.5
    store = FeatureStore(root / "features.zarr", "a")
    clips: list[Clip] = []
    for split, count in splits.items():
        split_clips = []
        for k in range(count):
            clip_id = f"{split}{k:02d}"
            n = frames
            pair = _segments(rng, n, 10, 40, 4)
            member = _segments(rng, n, 40, 80, 2)
            labels = (2 * pair + member).astype(np.int8)
            if unlabelled and k % 2 == 1:
                begin = int(rng.integers(0, n - 10))
                labels[begin:begin + 8] = UNLABELED
            valid = rng.random(n) >= faceless
            image = image_protos[pair] + noise * rng.normal(size=(n, image_dim))
            image[~valid] = 0.0
            has_audio = clip_id not in no_audio
            store.ensure_clip(clip_id, n, 10.0, {"has_audio": has_audio})
            store.write(clip_id, "valid", valid, cache_key="test", rate=10.0)
            store.write(clip_id, "swin", image.astype(np.float16), cache_key="test", rate=10.0)
            if token_maps:
                maps = image[:, None, None, :] + noise * rng.normal(size=(n, 2, 2, image_dim))
                maps[~valid] = 0.0
                store.write(clip_id, "swin_tokens", maps.astype(np.float16), cache_key="test",
                            rate=10.0)
            if has_audio:
                cumulative = np.r_[0, np.cumsum(member)]
                for length in WINDOWS:
                    start, stop = window_bounds(n, length)
                    share = (cumulative[stop] - cumulative[start]) / (stop - start)
                    audio = ((1 - share)[:, None] * audio_protos[0] + share[:, None] * audio_protos[1]
                             + noise * rng.normal(size=(n, audio_dim)))
                    store.write(clip_id, f"tdnn_w{length}", audio.astype(np.float16),
                                cache_key="test", rate=10.0)
                if logmel:
                    frame = np.minimum(np.arange(n * 5 // 2) * 10 // 25, n - 1)
                    mel = mel_protos[member[frame]] + noise * mel_rng.normal(size=(frame.size, 16))
                    store.write(clip_id, "logmel", mel.astype(np.float32), cache_key="test",
                                rate=25.0)
            split_clips.append(Clip(clip_id=clip_id, split=split, video_id=clip_id, n_frames=n,
                                    fps=10.0, frames_dir=None, video_path=None, audio_path=None,
                                    labels=None if split == "test" else labels))
        write_manifest(root / "manifests" / f"{split}.jsonl", split_clips)
        clips += split_clips
    return Synthetic(root / "features.zarr", root / "manifests", clips)


def au_of(labels: np.ndarray) -> np.ndarray:
    """AU labels of expression labels: AU k is active where the class pair (label // 2, what the
    face shows) is k % 4."""
    au = (((labels[:, None] // 2) == (np.arange(NUM_AUS) % 4)[None, :])).astype(np.int8)
    au[labels == UNLABELED] = UNLABELED
    return au


def with_au_labels(base: Synthetic) -> Synthetic:
    """``base`` (4 train, 2 val, 1 test clips) with AU labels (:func:`au_of`), rewritten into its
    manifests: train00 is expression-train and AU-val; train03 is AU-only (train); val00 is AU-only
    (val) as well; train01 lacks AU labels on frames 5-14."""
    clips, au_only = [], []
    for clip in base.clips:
        if clip.labels is None:
            clips.append(clip)
            continue
        au = au_of(clip.labels)
        if clip.clip_id == "train01":
            au[5:15] = UNLABELED
        au_split = "val" if clip.clip_id in ("train00", "val00", "val01") else "train"
        changed = dataclasses.replace(clip, au_labels=au, au_split=au_split)
        if clip.clip_id in ("train03", "val00"):
            au_only.append(dataclasses.replace(changed, labels=None, split=au_split))
        else:
            clips.append(changed)
    for split in ("train", "val", "test"):
        write_manifest(base.manifests / f"{split}.jsonl", [c for c in clips if c.split == split])
    write_manifest(base.manifests / "au_only.jsonl", au_only)
    return dataclasses.replace(base, clips=load_clips(base.manifests, au_only=True))


def va_of(labels: np.ndarray) -> np.ndarray:
    """VA labels of expression labels: valence follows the class pair (what the face shows:
    -0.75, -0.25, 0.25, 0.75), arousal the member (what the audio tells: -0.5 or 0.5); -5 where
    the expression is unlabelled. Ceilings on mean CCC: face alone 0.5 (valence only), audio
    alone 0.5 (arousal only), both about 1."""
    va = np.stack([-0.75 + 0.5 * (labels // 2), -0.5 + 1.0 * (labels % 2)], axis=1)
    va = va.astype(np.float32)
    va[labels == UNLABELED] = -5.0
    return va


def with_va_labels(base: Synthetic) -> Synthetic:
    """``base`` with VA labels (:func:`va_of`) on every clip with expression labels, the VA split
    its expression split, rewritten into its manifests (AU-only clips get none)."""
    clips = [dataclasses.replace(c, va_labels=va_of(c.labels), va_split=c.split)
             if c.labels is not None else c for c in base.clips]
    for split in ("train", "val", "test"):
        write_manifest(base.manifests / f"{split}.jsonl",
                       [c for c in clips if c.split == split and c.expr_split is not None])
    if any(c.expr_split is None for c in clips):
        write_manifest(base.manifests / "au_only.jsonl", [c for c in clips if c.expr_split is None])
    return dataclasses.replace(base, clips=load_clips(base.manifests, au_only=True))
