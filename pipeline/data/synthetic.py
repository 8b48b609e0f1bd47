"""The demo dataset: a small Aff-Wild2-layout corpus whose labels need both modalities.

``generate(out, DemoConfig(...))`` (the ``fer-pipeline demo-data`` command) writes real files in
the layout the dataset reader expects::

    OUT/cropped_aligned/<clip>/00001.jpg ...        face crops (a few frames missing: no face)
    OUT/videos/<video>.mp4                          frames + AAC audio, fps 10, 12.5 or 15
    OUT/annotations/EXPR_Recognition_Challenge/Train_Set/<clip>.txt    (and Validation_Set/)
    OUT/annotations/AU_Detection_Challenge/Train_Set/<clip>.txt        (and Validation_Set/)
    OUT/annotations/VA_Estimation_Challenge/Train_Set/<clip>.txt       (and Validation_Set/)
    OUT/test_set.txt                                test clip names, one a line (no labels)
    OUT/demo.json                                   the generator's settings; marks OUT as a demo

One video is two-person: its clips ``<video>_left`` and ``<video>_right`` each have their own face
track and labels but share the video's audio. It is always in the validation split. The same
config gives a byte-identical tree; another seed gives other data.

Every train and validation clip also has an AU annotation file in the same split, and two extra
videos (after the others, ``AU_ONLY_SPLITS``) have AU labels only, one in each AU split. The AU
labels come from their own random streams and the extra videos come last, so every file of a
dataset without them is byte-identical with them: adding AU labels changed no expression result.

Label design
------------
Every labelled frame's class is ``2 * pair + member`` (``label // 2`` = pair, ``label % 2`` =
member), so the classes form four pairs {0,1} {2,3} {4,5} {6,7}:

* the **face image** shows the pair: the background hue is one of four hues 90 degrees apart
  (red, yellow-green, cyan, violet; +-20 degrees per frame), a strong global property that survives
  a random-weight backbone. Nuisance independent of the label: per-clip identity (skin tone, face
  shape, hair), per-frame position, scale, mouth and brow shape, brightness, a lighting gradient,
  pixel noise and JPEG compression. ``face_cue = "geometry"``: the mouth's shape shows the pair
  instead, under colours, position and scale drawn afresh each frame (a random network cannot
  read it; ``synthetic_media.geometry_face``);
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
With ``missing_faces`` set (a share in [0, 0.9]), every clip instead misses exactly
``round(share * frames)`` face crops, in runs of 5-30 frames (a detector losing a face for a
while), drawn from a generator of their own: everything else is the default demo's, byte for byte.

AU labels are the AUs of the class a frame's cues show (``CLASS_AUS`` of
:mod:`pipeline.data.synthetic_labels`, where the label tracks are drawn: Happiness AU6+AU12,
Surprise AU1+AU2+AU26, ...; the clean class, before the expression label noise), so they too need
both modalities. Some clips have ``-1`` rows (drawn apart from the expression ``-1`` runs), and in
a fraction ``noise`` of annotated frames one random AU is flipped.

VA labels (every clip with AU labels has a VA file in the same split; their own random streams,
so every other file is unchanged): valence follows the face's pair (``VA_PAIR_VALENCE``: -0.6,
-0.2, 0.2, 0.6), arousal the audio's member (``VA_MEMBER_AROUSAL``: -0.4, 0.4), both smoothed over
3 frames at segment changes and with Gaussian noise of sd 0.05; some clips have ``-5`` runs
(invalid). Ceilings on mean CCC (population values, before the noise): the face alone can know
valence only (CCC_V up to 1, CCC_A 0: mean 0.5), the audio alone arousal only (mean 0.5), both
about 1 (0.97-0.99 with the noise).

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

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from pipeline.data.labels import AU_HEADER, HEADER, NUM_AUS, NUM_CLASSES, UNLABELED
from pipeline.data.media import write_video
from pipeline.data.synthetic_media import (FACE_CUES, SAMPLE_RATE, audio, face, geometry_face,
                                           identity, jpeg)
from pipeline.data.synthetic_labels import (au_rows, expression_labels, member_track,
                                           missing_share, pair_track, random_runs)
from pipeline.data.synthetic_va import va_labels, write_va
from pipeline.errors import PipelineError
from pipeline.progress import ProgressEvent, ProgressFn, silent

FPS_CHOICES = (10.0, 12.5, 15.0)  # frame rates differ per video, as in Aff-Wild2

TEST_LIST = "test_set.txt"  # test clip names, one a line
MARKER = "demo.json"  # written first (incomplete) and last (complete): marks OUT as a demo
ANNOTATION_DIR = Path("annotations", "EXPR_Recognition_Challenge")
AU_ANNOTATION_DIR = Path("annotations", "AU_Detection_Challenge")
AU_ONLY_SPLITS = ("train", "val")  # one extra video per entry, with AU labels only
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
    missing_faces: float | None = None  # share of every clip's frames without a face crop (None:
    # the default rule, about half the clips lose a few faces)
    face_cue: str = "colour"  # the face's cue to the pair: "colour" (hue) or "geometry" (mouth)

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
        if self.missing_faces is not None and not 0.0 <= self.missing_faces <= 0.9:
            raise PipelineError(f"--missing-faces {self.missing_faces}: need a share in [0, 0.9]")
        if self.face_cue not in FACE_CUES:
            raise PipelineError(f"--face-cue {self.face_cue}: choose from {', '.join(FACE_CUES)}")
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
    au_clips: dict[str, int] = field(default_factory=dict)  # clips with AU labels per AU split
    au_only_clips: int = 0  # of them, clips with AU labels only
    au_active: list[int] = field(default_factory=list)  # annotated frames each AU is active in
    va_clips: dict[str, int] = field(default_factory=dict)  # clips with VA labels per VA split


@dataclass
class _Clip:
    name: str  # clip id: the video name, or it + "_left"/"_right"
    crops: np.ndarray  # uint8 [T, size, size, 3], every frame's face
    labels: np.ndarray  # int8 [T], noisy, -1 runs
    present: np.ndarray  # bool [T], the frame's face crop file is written (else: no face found)


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
    settings = asdict(config)
    if config.missing_faces is None:  # the default demo's marker stays as it always was
        del settings["missing_faces"]
    if config.face_cue == "colour":  # likewise
        del settings["face_cue"]
    record = {"generator": "fer-pipeline demo-data", "config": settings, "complete": complete}
    (out / MARKER).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")


def generate(out: str | Path, config: DemoConfig = DemoConfig(), progress: ProgressFn = silent
             ) -> DemoSummary:
    """Write the demo dataset under ``out`` (empty, new, or a previous demo) and summarise it."""
    out = Path(out)
    _prepare(out)
    _write_marker(out, config, complete=False)
    splits, two_person = _splits(np.random.default_rng(config.seed), config.clips)
    summary = DemoSummary(out=out, clips=dict.fromkeys(("train", "val", "test"), 0),
                          frames=dict.fromkeys(("train", "val", "test"), 0),
                          videos=len(splits) + len(AU_ONLY_SPLITS),
                          labelled_frames=0, noisy_frames=0, missing_frames=0,
                          class_counts=[0] * NUM_CLASSES, au_clips=dict.fromkeys(SPLIT_DIRS, 0),
                          au_active=[0] * NUM_AUS, va_clips=dict.fromkeys(SPLIT_DIRS, 0))
    test_names: list[str] = []
    videos = splits + list(AU_ONLY_SPLITS)
    progress(ProgressEvent("videos", total=len(videos)))
    for index, split in enumerate(videos):
        au_only = index >= len(splits)
        # One generator per video: a video's content depends only on (seed, index).
        rng = np.random.default_rng([config.seed, index])
        noise_rng = np.random.default_rng([config.seed, index, 1])
        au_rng = np.random.default_rng([config.seed, index, 2])
        au_noise_rng = np.random.default_rng([config.seed, index, 3])
        video = f"demo_{index:03d}"
        fps = FPS_CHOICES[index % len(FPS_CHOICES)]
        n = config.frames
        member = member_track(rng, n)
        names = [f"{video}_left", f"{video}_right"] if index == two_person else [video]
        clips = []
        for name in names:
            pair = pair_track(rng, n)
            labels, noisy = expression_labels(rng, noise_rng, pair, member, config.noise)
            present = np.ones(n, dtype=bool)
            if rng.random() < 0.5:  # about half the clips lose a few faces
                present &= ~random_runs(rng, n, int(rng.integers(1, 4)), (1, 4))
            if config.missing_faces is not None:  # its own generator: nothing else changes
                face_rng = np.random.default_rng([config.seed, index, 4, len(clips)])
                present = ~missing_share(face_rng, n, config.missing_faces)
            who = identity(rng)
            crops = np.stack([geometry_face(rng, int(p), config.size) if config.face_cue == "geometry"
                              else face(rng, int(p), who, config.size) for p in pair])
            clips.append(_Clip(name, crops, labels, present))
            _write_clip(out, None if au_only else split, clips[-1])
            if split != "test":
                au_labels = au_rows(au_rng, au_noise_rng, 2 * pair + member, config.noise)
                _write_au(out, split, name, au_labels)
                va_rng = np.random.default_rng([config.seed, index, 5, len(clips)])
                write_va(out, split, name, va_labels(va_rng, pair, member))
                summary.va_clips[split] += 1
                summary.au_clips[split] += 1
                summary.au_only_clips += au_only
                annotated = au_labels[au_labels[:, 0] != UNLABELED]
                summary.au_active = (summary.au_active + annotated.sum(axis=0)).tolist()
            summary.missing_frames += int((~present).sum())
            if au_only:
                continue
            summary.clips[split] += 1
            summary.frames[split] += n
            if split == "test":
                test_names.append(name)
            else:
                summary.noisy_frames += noisy
                summary.labelled_frames += int((labels != UNLABELED).sum())
                summary.class_counts = [c + int((labels == k).sum())
                                        for k, c in enumerate(summary.class_counts)]
        # A two-person video shows both faces side by side; the audio is the video's.
        frames = np.concatenate([clip.crops for clip in clips], axis=2)
        write_video(out / "videos" / f"{video}.mp4", frames, fps, audio(rng, member, fps),
                    SAMPLE_RATE)
        progress(ProgressEvent("videos", advance=1, info={"frames": n * len(names)}))
    (out / TEST_LIST).write_text("".join(f"{name}\n" for name in test_names), encoding="utf-8")
    _write_marker(out, config, complete=True)
    summary.bytes = sum(p.stat().st_size for name in _OWNED for p in _files(out / name))
    return summary


def _write_clip(out: Path, split: str | None, clip: _Clip) -> None:
    """The clip's face crops and, outside the test split, its expression annotation file (none
    for ``split`` None: a clip with AU labels only)."""
    folder = out / "cropped_aligned" / clip.name
    folder.mkdir(parents=True, exist_ok=True)
    for i in np.flatnonzero(clip.present):
        (folder / f"{i + 1:05d}.jpg").write_bytes(jpeg(clip.crops[i]))
    if split is not None and split != "test":
        path = out / ANNOTATION_DIR / SPLIT_DIRS[split] / f"{clip.name}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join([HEADER, *map(str, clip.labels.tolist())]) + "\n",
                        encoding="utf-8")


def _write_au(out: Path, split: str, name: str, au_labels: np.ndarray) -> None:
    path = out / AU_ANNOTATION_DIR / SPLIT_DIRS[split] / f"{name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [",".join(map(str, row)) for row in au_labels.tolist()]
    path.write_text("\n".join([AU_HEADER, *rows]) + "\n", encoding="utf-8")


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
