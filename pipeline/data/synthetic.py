"""The demo dataset: a small Aff-Wild2-layout corpus whose labels need both modalities.

``generate(out, DemoConfig(...))`` (the ``fer-pipeline demo-data`` command) writes real files in
the layout the dataset reader expects::

    OUT/cropped_aligned/<clip>/00001.jpg ...        face crops (a few frames missing: no face)
    OUT/videos/<video>.mp4                          frames + AAC audio, fps 10, 12.5 or 15
    OUT/annotations/EXPR_Recognition_Challenge/Train_Set/<clip>.txt    (and Validation_Set/)
    OUT/test_set.txt                                test clip names, one a line (no labels)
    OUT/demo.json                                   the generator's settings; marks OUT as a demo

One video is two-person: its clips ``<video>_left`` and ``<video>_right`` each have their own face
track and labels but share the video's audio. It is always in the validation split. The same
config gives a byte-identical tree; another seed gives other data.

Label design
------------
Every labelled frame's class is ``2 * pair + member`` (``label // 2`` = pair, ``label % 2`` =
member), so the classes form four pairs {0,1} {2,3} {4,5} {6,7}:

* the **face image** shows the pair: the background hue is one of four hues 90 degrees apart
  (red, yellow-green, cyan, violet; +-20 degrees per frame), a strong global property that survives
  a random-weight backbone. Nuisance independent of the label: per-clip identity (skin tone, face
  shape, hair), per-frame position, scale, mouth and brow shape, brightness, a lighting gradient,
  pixel noise and JPEG compression;
* the **audio** tells the member: a harmonic tone in a low band (fundamental 100-180 Hz,
  harmonics up to 1.2 kHz; member 0) or a high band (fundamental 300-500 Hz, harmonics up to
  3.8 kHz; member 1), so that the whole spectral envelope moves, not only the pitch. Nuisance:
  fundamental, vibrato, a syllable-like amplitude envelope and spectral tilt per segment, white
  noise at 6-12 dB SNR per video. Frame ``i`` covers ``[i / fps, (i + 1) / fps)`` of the audio,
  and the tone changes exactly at member boundaries (which are label boundaries).

Pair segments last 10-40 frames; member segments 50-100 frames, so that audio windows of 32-64
frames around a frame mostly hear its own member. Labels are the intersections: runs of mostly
10-40 frames. Pairs are drawn with weights 0.30/0.27/0.23/0.20 (never the same pair twice in a
row); each video starts with member 0 or 1 (weights 0.55/0.45) and alternates, independently of
the pairs: classes are roughly, not perfectly, balanced. Then a fraction ``noise`` (default 5%)
of labelled frames, in runs of 1-4 frames, get a different random class than their cues show
(annotator disagreement), some clips get ``-1`` runs (not annotated) and some miss face crops.

Ceilings on macro-F1 over the 8 classes (population values, before label noise). A classifier
that only knows the group g of a frame (its pair, or its member) does best by predicting class c
of g with probability P(c | g): then F1_c = P(c | g) and macro-F1 = (number of groups) / 8,
whatever the class priors. So:

* image alone (knows the pair, 4 groups): at most **0.50**; a head that predicts one fixed class
  per pair (argmax) gets about 0.35;
* audio alone (knows the member, 2 groups): at most **0.25**; argmax per member about 0.11;
* fusion (knows both): about **1 - noise = 0.95** (a little less where an audio window straddles a
  member boundary).
"""

from __future__ import annotations

import colorsys
import io
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.labels import HEADER, NUM_CLASSES, UNLABELED
from pipeline.data.media import write_video
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent

SAMPLE_RATE = 16000  # Hz, the rate the audio extractors read at
FPS_CHOICES = (10.0, 12.5, 15.0)  # frame rates differ per video, as in Aff-Wild2
PAIR_WEIGHTS = (0.30, 0.27, 0.23, 0.20)  # how often each pair {0,1} {2,3} {4,5} {6,7} is drawn
MEMBER_WEIGHTS = (0.55, 0.45)  # which member (first / second class of a pair) a video starts with
PAIR_HUES = (0.0, 90.0, 180.0, 270.0)  # background hue (degrees) per pair
HUE_JITTER = 20.0  # +- degrees per frame: far from the 45 degrees that would blur two pairs
PAIR_SEGMENT = (10, 40)  # frames per pair segment (inclusive range)
MEMBER_SEGMENT = (50, 100)  # frames per member segment: long, because audio is read in windows
MEMBER_F0 = ((100.0, 180.0), (300.0, 500.0))  # fundamental frequency band (Hz) per member
MEMBER_TOP_HZ = (1200.0, 3800.0)  # highest harmonic (Hz) per member: the whole band moves
FADE_S = 0.01  # raised-cosine fade at each member boundary, so tones do not click
JPEG_QUALITY = 90

TEST_LIST = "test_set.txt"  # test clip names, one a line
MARKER = "demo.json"  # written first (incomplete) and last (complete): marks OUT as a demo
ANNOTATION_DIR = Path("annotations", "EXPR_Recognition_Challenge")
SPLIT_DIRS = {"train": "Train_Set", "val": "Validation_Set"}
_OWNED = ("cropped_aligned", "videos", "annotations", TEST_LIST, MARKER)  # what a rerun replaces

MIN_CLIPS = 4  # one train clip, the two-person pair in val, one test clip
MIN_FRAMES = 16
MIN_SIZE = 32


@dataclass(frozen=True)
class DemoConfig:
    clips: int = 12  # clips in all splits (videos = clips - 1: one video is two-person)
    frames: int = 120  # frames per clip
    seed: int = 0  # everything is drawn from this seed
    size: int = 112  # side of the square face crops in pixels (even: the video codec needs it)
    noise: float = 0.05  # fraction of labelled frames whose label disagrees with the cues

    def __post_init__(self) -> None:
        if self.clips < MIN_CLIPS:
            raise PipelineError(f"--clips {self.clips}: need at least {MIN_CLIPS} "
                                "(train, a two-person validation video, test)")
        if self.frames < MIN_FRAMES:
            raise PipelineError(f"--frames {self.frames}: need at least {MIN_FRAMES}")
        if self.size < MIN_SIZE or self.size % 2:
            raise PipelineError(f"--size {self.size}: need an even number >= {MIN_SIZE}")
        if not 0.0 <= self.noise <= 0.5:
            raise PipelineError(f"--noise {self.noise}: need a fraction in [0, 0.5]")
        if self.seed < 0:
            raise PipelineError(f"--seed {self.seed}: need a non-negative integer")


@dataclass
class DemoSummary:
    out: Path  # the dataset root
    clips: dict[str, int]  # clips per split
    frames: dict[str, int]  # frames per split
    videos: int  # video files (one holds two clips)
    labelled_frames: int  # annotated frames (train + val), -1 excluded
    noisy_frames: int  # annotated frames whose label disagrees with the cues
    missing_frames: int  # frames with no face crop file
    class_counts: list[int] = field(default_factory=list)  # annotated frames per class
    bytes: int = 0  # size on disk of everything written


@dataclass
class _Clip:
    name: str  # clip id: the video name, or it + "_left"/"_right"
    crops: np.ndarray  # uint8 [T, size, size, 3], every frame's face
    labels: np.ndarray  # int8 [T], noisy, -1 runs
    present: np.ndarray  # bool [T], the frame's face crop file is written (else: no face found)


def _segments(rng: np.random.Generator, n: int, length: tuple[int, int]) -> list[tuple[int, int]]:
    """Cut ``range(n)`` into consecutive [start, end) segments of the given length range."""
    bounds, start = [], 0
    while start < n:
        end = min(n, start + int(rng.integers(length[0], length[1] + 1)))
        bounds.append((start, end))
        start = end
    return bounds


def _pair_track(rng: np.random.Generator, n: int) -> np.ndarray:
    track = np.empty(n, dtype=np.int64)
    previous = -1
    for start, end in _segments(rng, n, PAIR_SEGMENT):
        weights = np.array(PAIR_WEIGHTS)
        if previous >= 0:
            weights[previous] = 0.0  # a new segment shows a new pair
        previous = int(rng.choice(len(weights), p=weights / weights.sum()))
        track[start:end] = previous
    return track


def _member_track(rng: np.random.Generator, n: int) -> np.ndarray:
    """Members alternate segment by segment (a video has only a few): keeps the two balanced."""
    track = np.empty(n, dtype=np.int64)
    member = int(rng.choice(2, p=MEMBER_WEIGHTS))
    for start, end in _segments(rng, n, MEMBER_SEGMENT):
        track[start:end] = member
        member = 1 - member
    return track


def _runs(rng: np.random.Generator, n: int, count: int, length: tuple[int, int]) -> np.ndarray:
    """A mask of ``count`` runs at random places, each of the given length range."""
    mask = np.zeros(n, dtype=bool)
    for _ in range(count):
        span = int(rng.integers(length[0], length[1] + 1))
        start = int(rng.integers(0, max(1, n - span)))
        mask[start:start + span] = True
    return mask


def _labels(rng: np.random.Generator, noise_rng: np.random.Generator, pair: np.ndarray,
            member: np.ndarray, noise: float) -> tuple[np.ndarray, int]:
    """Noisy labels with -1 runs, and how many labelled frames disagree with the cues.

    The flips come from their own generator, so that datasets differing only in ``noise`` have
    the same frames, audio and clean labels.
    """
    n = len(pair)
    clean = 2 * pair + member
    labels = clean.copy()
    if rng.random() < 0.5:  # about half the clips have unannotated stretches
        labels[_runs(rng, n, int(rng.integers(1, 3)), (3, 12))] = UNLABELED
    annotated = np.flatnonzero(labels != UNLABELED)
    target = int(round(noise * len(annotated)))
    noisy = np.zeros(n, dtype=bool)
    while noisy.sum() < target:
        start = int(noise_rng.choice(annotated))
        run = np.arange(start, min(n, start + int(noise_rng.integers(1, 5))))
        run = run[(labels[run] != UNLABELED) & ~noisy[run]][: target - int(noisy.sum())]
        if run.size:
            wrong = (clean[run[0]] + noise_rng.integers(1, NUM_CLASSES)) % NUM_CLASSES
            labels[run] = wrong
            noisy[run] = True
    return labels.astype(np.int8), int(noisy.sum())


def _rgb(hue_deg: float, saturation: float, value: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb((hue_deg % 360.0) / 360.0, saturation, value)) * 255.0


def _fill(rgb: np.ndarray) -> tuple[int, ...]:
    return tuple(int(v) for v in np.clip(rgb, 0, 255))


def _identity(rng: np.random.Generator) -> dict:
    """Per-clip appearance: who the face is (independent of every label)."""
    return {
        "skin": _rgb(rng.uniform(15, 40), rng.uniform(0.25, 0.6), rng.uniform(0.45, 0.95)),
        "hair": _rgb(rng.uniform(0, 50), rng.uniform(0.2, 0.8), rng.uniform(0.05, 0.5)),
        "width": rng.uniform(0.50, 0.62),  # face width as a fraction of the crop
        "height": rng.uniform(0.66, 0.80),
        "eyes": rng.uniform(0.16, 0.22),  # half the distance between the eyes, fraction of crop
    }


def _face(rng: np.random.Generator, pair: int, who: dict, size: int) -> np.ndarray:
    """One face crop whose background hue shows ``pair``; everything else is nuisance."""
    s = float(size)
    background = _rgb(PAIR_HUES[pair] + rng.uniform(-HUE_JITTER, HUE_JITTER),
                      rng.uniform(0.45, 0.8), rng.uniform(0.55, 0.9))
    image = Image.new("RGB", (size, size), _fill(background))
    draw = ImageDraw.Draw(image)
    cx, cy = s * (0.5 + rng.uniform(-0.05, 0.05)), s * (0.52 + rng.uniform(-0.05, 0.05))
    scale = rng.uniform(0.92, 1.08)
    w, h = s * who["width"] * scale / 2, s * who["height"] * scale / 2
    hair = (cx - w * 1.05, cy - h * 1.08, cx + w * 1.05, cy + h * 0.2)
    draw.ellipse(hair, fill=_fill(who["hair"]))
    draw.ellipse((cx - w, cy - h * 0.9, cx + w, cy + h), fill=_fill(who["skin"]))
    eye_x, eye_y, eye_r = s * who["eyes"] * scale, cy - h * 0.2, max(1.0, s * 0.03)
    brow = rng.uniform(-0.04, 0.04) * s  # brow tilt: an expression-like nuisance
    for side in (-1, 1):
        ex = cx + side * eye_x
        eye = (ex - eye_r * 1.6, eye_y - eye_r, ex + eye_r * 1.6, eye_y + eye_r)
        draw.ellipse(eye, fill=(30, 25, 25))
        draw.line((ex - eye_r * 2, eye_y - eye_r * 2.5 + side * brow,
                   ex + eye_r * 2, eye_y - eye_r * 2.5 - side * brow),
                  fill=_fill(who["hair"] * 0.6), width=max(1, size // 40))
    mouth_w, mouth_h = w * rng.uniform(0.35, 0.6), h * rng.uniform(0.05, 0.25)
    mouth_y = cy + h * 0.45
    box = (cx - mouth_w, mouth_y - mouth_h, cx + mouth_w, mouth_y + mouth_h)
    if rng.random() < 0.5:  # smile or frown: not the label
        draw.arc(box, 20, 160, fill=(120, 30, 40), width=max(1, size // 30))
    else:
        draw.arc(box, 200, 340, fill=(120, 30, 40), width=max(1, size // 30))
    pixels = np.asarray(image, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)  # a lighting gradient across the crop
    axis = np.linspace(-1.0, 1.0, size)
    ramp = np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None]
    pixels *= (rng.uniform(0.75, 1.2) * (1.0 + 0.15 * ramp))[..., None]
    pixels += rng.normal(0.0, 6.0, pixels.shape)
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _jpeg(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _audio(rng: np.random.Generator, member: np.ndarray, fps: float) -> np.ndarray:
    """Mono float32 audio whose pitch band follows ``member`` frame by frame."""
    n_samples = int(round(len(member) / fps * SAMPLE_RATE))
    signal = np.zeros(n_samples, dtype=np.float64)
    changes = np.flatnonzero(np.diff(member)) + 1
    for start, end in zip(np.r_[0, changes], np.r_[changes, len(member)]):
        a, b = int(round(start / fps * SAMPLE_RATE)), int(round(end / fps * SAMPLE_RATE))
        t = np.arange(b - a) / SAMPLE_RATE
        f0 = rng.uniform(*MEMBER_F0[member[start]])
        top = MEMBER_TOP_HZ[member[start]]
        vibrato = 1.0 + rng.uniform(0.02, 0.04) * np.sin(2 * np.pi * rng.uniform(4, 6) * t)
        phase = 2 * np.pi * np.cumsum(f0 * vibrato) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
        k = np.arange(1, int(top / (f0 * 1.05)) + 1)[:, None]  # 1.05: room for the vibrato
        tone = (np.sin(k * phase[None, :]) / k ** rng.uniform(0.5, 1.0)).sum(axis=0)
        syllables = 0.35 + 0.65 * (0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(2, 4) * t))
        fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / FADE_S)
        signal[a:b] = tone * syllables * (0.5 - 0.5 * np.cos(np.pi * fade))
    rms = np.sqrt(np.mean(signal ** 2)) or 1.0
    signal += rng.normal(0.0, rms / 10 ** (rng.uniform(6, 12) / 20), n_samples)
    return (0.6 * signal / np.abs(signal).max()).astype(np.float32)


def _splits(rng: np.random.Generator, n_clips: int) -> tuple[list[str], int]:
    """Split of each video and which video is two-person (always in val)."""
    n_test = max(1, int(round(0.15 * n_clips)))
    n_val = max(2, int(round(0.25 * n_clips)))
    n_train = n_clips - n_val - n_test
    others = ["train"] * n_train + ["val"] * (n_val - 2) + ["test"] * n_test
    others = [others[i] for i in rng.permutation(len(others))]
    two_person = int(rng.integers(0, len(others) + 1))
    return others[:two_person] + ["val"] + others[two_person:], two_person


def _prepare(out: Path) -> None:
    """Make OUT writable for a demo: empty, or a previous demo (whose files are replaced)."""
    if out.exists() and not out.is_dir():
        raise PipelineError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise PipelineError(f"{out}: not empty and not a demo dataset (no {MARKER}); "
                                "refusing to write into it")
        for name in _OWNED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _write_marker(out: Path, config: DemoConfig, complete: bool) -> None:
    record = {"generator": "fer-pipeline demo-data", "config": asdict(config), "complete": complete}
    (out / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def generate(out: str | Path, config: DemoConfig = DemoConfig(), progress: ProgressFn = silent
             ) -> DemoSummary:
    """Write the demo dataset under ``out`` (empty, new, or a previous demo) and summarise it."""
    out = Path(out)
    _prepare(out)
    _write_marker(out, config, complete=False)
    splits, two_person = _splits(np.random.default_rng(config.seed), config.clips)
    summary = DemoSummary(out=out, clips=dict.fromkeys(("train", "val", "test"), 0),
                          frames=dict.fromkeys(("train", "val", "test"), 0), videos=len(splits),
                          labelled_frames=0, noisy_frames=0, missing_frames=0,
                          class_counts=[0] * NUM_CLASSES)
    test_names: list[str] = []
    progress(ProgressEvent("videos", total=len(splits)))
    for index, split in enumerate(splits):
        # One generator per video: a video's content depends only on (seed, index).
        rng = np.random.default_rng([config.seed, index])
        noise_rng = np.random.default_rng([config.seed, index, 1])
        video = f"demo_{index:03d}"
        fps = FPS_CHOICES[index % len(FPS_CHOICES)]
        n = config.frames
        member = _member_track(rng, n)
        names = [f"{video}_left", f"{video}_right"] if index == two_person else [video]
        clips = []
        for name in names:
            pair = _pair_track(rng, n)
            labels, noisy = _labels(rng, noise_rng, pair, member, config.noise)
            present = np.ones(n, dtype=bool)
            if rng.random() < 0.5:  # about half the clips lose a few faces
                present &= ~_runs(rng, n, int(rng.integers(1, 4)), (1, 4))
            who = _identity(rng)
            crops = np.stack([_face(rng, int(p), who, config.size) for p in pair])
            clips.append(_Clip(name, crops, labels, present))
            _write_clip(out, split, clips[-1])
            summary.clips[split] += 1
            summary.frames[split] += n
            summary.missing_frames += int((~present).sum())
            if split == "test":
                test_names.append(name)
            else:
                summary.noisy_frames += noisy
                summary.labelled_frames += int((labels != UNLABELED).sum())
                summary.class_counts = [c + int((labels == k).sum())
                                        for k, c in enumerate(summary.class_counts)]
        # A two-person video shows both faces side by side; the audio is the video's.
        frames = np.concatenate([clip.crops for clip in clips], axis=2)
        write_video(out / "videos" / f"{video}.mp4", frames, fps, _audio(rng, member, fps),
                    SAMPLE_RATE)
        progress(ProgressEvent("videos", advance=1, info={"frames": n * len(names)}))
    (out / TEST_LIST).write_text("".join(f"{name}\n" for name in test_names), encoding="utf-8")
    _write_marker(out, config, complete=True)
    summary.bytes = sum(p.stat().st_size for name in _OWNED for p in _files(out / name))
    return summary


def _write_clip(out: Path, split: str, clip: _Clip) -> None:
    """The clip's face crops and, outside the test split, its annotation file."""
    folder = out / "cropped_aligned" / clip.name
    folder.mkdir(parents=True, exist_ok=True)
    for i in np.flatnonzero(clip.present):
        (folder / f"{i + 1:05d}.jpg").write_bytes(_jpeg(clip.crops[i]))
    if split != "test":
        path = out / ANNOTATION_DIR / SPLIT_DIRS[split] / f"{clip.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([HEADER, *map(str, clip.labels.tolist())]) + "\n",
                        encoding="utf-8")


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
