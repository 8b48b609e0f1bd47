"""The demo dataset generator: Aff-Wild2 layout, determinism, labels that need both modalities.

The layout is checked against the published format (header, 5-digit 1-based frames, one label a
line, 12 AU values a line); the label design against scikit-learn classifiers on plain features
(pixels, librosa log-mel), which know nothing of how the data was made. AU labels were added
later without changing a byte of what the generator wrote before (checked two ways below).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from cli import demo
from pipeline.data import synthetic, synthetic_va
from pipeline.data.dataset import read_dataset
from pipeline.data.labels import AU_HEADER, AU_NAMES, CLASSES, HEADER, NUM_CLASSES, UNLABELED
from pipeline.data.media import decode_audio, probe_video, read_image
from pipeline.data.synthetic_labels import CLASS_AUS
from pipeline.data.synthetic import (
    ANNOTATION_DIR,
    AU_ANNOTATION_DIR,
    AU_ONLY_SPLITS,
    FPS_CHOICES,
    MARKER,
    SAMPLE_RATE,
    TEST_LIST,
    DemoConfig,
    generate,
)
from pipeline.errors import PipelineError

SMALL = DemoConfig(clips=5, frames=30, seed=3, size=32)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return out, generate(out, SMALL)


def _annotations(out: Path) -> dict[str, tuple[str, np.ndarray]]:
    """clip -> (split, labels) read as the published format defines it."""
    found = {}
    for split, folder in (("train", "Train_Set"), ("val", "Validation_Set")):
        for path in sorted((out / ANNOTATION_DIR / folder).glob("*.txt")):
            lines = path.read_text(encoding="utf-8").splitlines()
            assert lines[0] == HEADER, path
            found[path.stem] = (split, np.array([int(v) for v in lines[1:]]))
    return found


def _au_annotations(out: Path) -> dict[str, tuple[str, np.ndarray]]:
    """clip -> (AU split, int [T, 12] rows) read as the published AU format defines it."""
    found = {}
    for split, folder in (("train", "Train_Set"), ("val", "Validation_Set")):
        for path in sorted((out / AU_ANNOTATION_DIR / folder).glob("*.txt")):
            lines = path.read_text(encoding="utf-8").splitlines()
            assert lines[0] == AU_HEADER, path
            found[path.stem] = (split, np.array([[int(v) for v in line.split(",")]
                                                 for line in lines[1:]]))
    return found


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _video_of(clip: str) -> str:
    return clip.removesuffix("_left").removesuffix("_right")


@pytest.mark.parametrize("options, match", [
    (dict(clips=3), "--clips 3"),
    (dict(frames=8), "--frames 8"),
    (dict(size=33), "--size 33"),
    (dict(size=16), "--size 16"),
    (dict(noise=0.7), "--noise 0.7"),
    (dict(seed=-1), "--seed -1"),
])
def test_config_rejects_bad_options(options, match):
    with pytest.raises(PipelineError, match=match):
        DemoConfig(**options)


def test_layout_follows_aff_wild2(small):
    out, summary = small
    labelled = _annotations(out)
    au = _au_annotations(out)
    au_only = sorted(set(au) - set(labelled))
    test_clips = (out / TEST_LIST).read_text(encoding="utf-8").split()
    clips = sorted(p.name for p in (out / "cropped_aligned").iterdir())
    # every clip in exactly one expression split, or AU-only
    assert sorted([*labelled, *test_clips, *au_only]) == clips
    assert len(au_only) == summary.au_only_clips == len(AU_ONLY_SPLITS)
    assert sorted(au[c][0] for c in au_only) == sorted(AU_ONLY_SPLITS)
    # Every labelled clip has AU labels in the same split; test clips have none.
    assert all(au[c][0] == split for c, (split, _) in labelled.items())
    assert not set(test_clips) & set(au)
    assert {s: sum(v[0] == s for v in au.values()) for s in ("train", "val")} == summary.au_clips
    assert {s: sum(1 for v in labelled.values() if v[0] == s) for s in ("train", "val")} \
        == {s: summary.clips[s] for s in ("train", "val")}
    assert len(test_clips) == summary.clips["test"] >= 1 and summary.clips["val"] >= 2
    for split, labels in labelled.values():
        assert len(labels) == SMALL.frames
        assert set(labels.tolist()) <= set(range(UNLABELED, NUM_CLASSES))
    everything = np.concatenate([labels for _, labels in labelled.values()])
    assert (everything == UNLABELED).any()  # -1 runs
    assert summary.labelled_frames == int((everything != UNLABELED).sum())
    assert summary.class_counts == np.bincount(everything[everything >= 0], minlength=8).tolist()

    two_person = [c for c in clips if c.endswith("_left")]
    assert len(two_person) == 1
    video = _video_of(two_person[0])
    assert labelled[f"{video}_left"][0] == labelled[f"{video}_right"][0] == "val"
    assert sorted(p.stem for p in (out / "videos").glob("*.mp4")) \
        == sorted({_video_of(c) for c in clips})

    missing = 0
    for clip in clips:
        names = sorted(p.name for p in (out / "cropped_aligned" / clip).iterdir())
        expected = [f"{i + 1:05d}.jpg" for i in range(SMALL.frames)]
        assert set(names) <= set(expected)
        missing += len(expected) - len(names)
        image = read_image(out / "cropped_aligned" / clip / names[0])
        assert image.size == (SMALL.size, SMALL.size)
    assert missing == summary.missing_frames > 0
    sizes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert summary.bytes == sizes


def test_videos_carry_fps_frames_and_aligned_audio(small):
    out, summary = small
    rates = set()
    for path in sorted((out / "videos").glob("*.mp4")):
        info = probe_video(path)
        rates.add(info.fps)
        assert info.n_frames == SMALL.frames and info.has_audio, path
        audio = decode_audio(path, SAMPLE_RATE)
        # The track spans the frames; AAC adds at most a couple of 1024-sample frames of padding.
        assert abs(len(audio) - SMALL.frames / info.fps * SAMPLE_RATE) <= 2 * 1024 + 1, path
    assert len(rates) > 1 and rates <= set(FPS_CHOICES)
    assert summary.videos == len(list((out / "videos").iterdir())) \
        == SMALL.clips - 1 + len(AU_ONLY_SPLITS)


def test_same_seed_same_bytes_other_seed_other_data(small, tmp_path):
    out, _ = small
    generate(tmp_path / "again", SMALL)
    assert _hashes(tmp_path / "again") == _hashes(out)
    other = DemoConfig(clips=SMALL.clips, frames=SMALL.frames, seed=SMALL.seed + 1, size=SMALL.size)
    generate(tmp_path / "other", other)
    mine, theirs = _hashes(out), _hashes(tmp_path / "other")
    changed = [name for name in mine if name != MARKER and mine[name] != theirs.get(name)]
    assert len(changed) > 0.9 * (len(mine) - 1)


def test_noise_changes_only_labels(small, tmp_path):
    out, _ = small
    clean = DemoConfig(clips=SMALL.clips, frames=SMALL.frames, seed=SMALL.seed, size=SMALL.size,
                       noise=0.0)
    summary = generate(tmp_path / "clean", clean)
    assert summary.noisy_frames == 0
    mine, theirs = _hashes(out), _hashes(tmp_path / "clean")
    changed = {n for n in mine if mine[n] != theirs[n]}
    assert changed <= {n for n in mine if n.startswith("annotations") or n == MARKER}
    assert changed >= {n for n in mine if n.startswith(str(ANNOTATION_DIR)) or n == MARKER}
    noisy, exact = _annotations(out), _annotations(tmp_path / "clean")
    flips = sum(int((noisy[c][1] != exact[c][1]).sum()) for c in noisy)
    # The noise is a fraction of each clip's labelled frames.
    assert flips == sum(round(SMALL.noise * int((exact[c][1] != UNLABELED).sum())) for c in exact)
    assert all(((noisy[c][1] == UNLABELED) == (exact[c][1] == UNLABELED)).all() for c in noisy)
    # AU noise: one AU flipped in the same fraction of each clip's annotated frames.
    noisy_au, exact_au = _au_annotations(out), _au_annotations(tmp_path / "clean")
    for clip, (_, rows) in exact_au.items():
        differ = (noisy_au[clip][1] != rows).sum(axis=1)
        assert set(differ.tolist()) <= {0, 1}
        assert differ.sum() == round(SMALL.noise * int((rows[:, 0] != UNLABELED).sum()))
        assert ((noisy_au[clip][1] == UNLABELED) == (rows == UNLABELED)).all()


def test_au_labels_follow_the_classes(tmp_path):
    out = tmp_path / "clean"
    summary = generate(out, DemoConfig(clips=5, frames=30, seed=3, size=32, noise=0.0))
    labelled, au = _annotations(out), _au_annotations(out)
    rows = []
    for clip, (_, labels) in labelled.items():
        both = (labels != UNLABELED) & (au[clip][1][:, 0] != UNLABELED)
        assert both.any()
        for label, row in zip(labels[both], au[clip][1][both]):
            assert {AU_NAMES[k] for k in np.flatnonzero(row)} == set(CLASS_AUS[label]), label
            rows.append(row)
    assert set(CLASS_AUS[CLASSES.index("Happiness")]) == {"AU6", "AU12"}
    assert set(CLASS_AUS[CLASSES.index("Surprise")]) == {"AU1", "AU2", "AU26"}
    assert CLASS_AUS[CLASSES.index("Neutral")] == ()
    assert all(any(name in aus for aus in CLASS_AUS) for name in AU_NAMES)  # every AU occurs
    everything = np.concatenate([rows for _, rows in au.values()])
    assert (everything[:, 0] == UNLABELED).any()  # -1 rows
    assert set(np.unique(everything).tolist()) == {-1, 0, 1}
    assert summary.au_active == everything[everything[:, 0] >= 0].sum(axis=0).tolist()


def test_au_labels_leave_every_other_file_unchanged(small, tmp_path, monkeypatch):
    """The generator with its AU part switched off writes exactly the files it wrote before AU
    labels existed: the AU streams draw nothing from the expression ones."""
    out, _ = small
    monkeypatch.setattr(synthetic, "AU_ONLY_SPLITS", ())
    monkeypatch.setattr(synthetic, "_write_au", lambda *args: None)
    generate(tmp_path / "no_au", SMALL)
    without, full = _hashes(tmp_path / "no_au"), _hashes(out)
    assert without == {name: full[name] for name in without}
    assert set(full) - set(without) == {n for n in full if "AU_Detection_Challenge" in n
                                        or "demo_004" in n or "demo_005" in n}


def test_va_labels_follow_face_and_audio_and_leave_other_files_unchanged(small, tmp_path,
                                                                         monkeypatch):
    """VA files beside every AU file; valence follows the pair (face), arousal the member
    (audio); switching the VA part off changes no other file."""
    out, summary = small
    reading = read_dataset(out)
    assert reading.rejections == []
    clips = [c for c in reading.all_clips() if c.va_labels is not None]
    assert sorted(c.clip_id for c in clips) == sorted(
        c.clip_id for c in reading.all_clips() if c.au_labels is not None)
    assert summary.va_clips == {s: sum(c.va_split == s for c in clips) for s in ("train", "val")}
    labelled = _annotations(out)
    for clip in clips:
        if clip.clip_id not in labelled:
            continue  # AU/VA-only clips have no expression labels to compare with
        labels = labelled[clip.clip_id][1]
        ok = (labels != UNLABELED) & (clip.va_labels[:, 0] != -5)
        pair, member = labels[ok] // 2, labels[ok] % 2
        valence, arousal = clip.va_labels[ok, 0], clip.va_labels[ok, 1]
        # up to label noise and smoothing at changes: the cues decide the values
        assert np.mean(np.abs(valence - np.asarray(synthetic_va.VA_PAIR_VALENCE)[pair]) < 0.2) > 0.8
        assert np.mean(np.abs(arousal - np.asarray(synthetic_va.VA_MEMBER_AROUSAL)[member]) < 0.3) \
            > 0.8
    monkeypatch.setattr(synthetic, "write_va", lambda *args: None)
    generate(tmp_path / "no_va", SMALL)
    without, full = _hashes(tmp_path / "no_va"), _hashes(out)
    assert without == {name: full[name] for name in without}
    assert set(full) - set(without) == {n for n in full if "VA_Estimation_Challenge" in n}


def test_expression_files_as_before_au_labels(small):
    """A digest of SMALL's text files (expression annotations, test list, marker) as written by
    the generator before AU labels (commit 40fdcc7): text, so independent of image and video
    encoder versions."""
    out, _ = small
    names = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                   and p.suffix in (".txt", ".json") and "AU_Detection" not in str(p)
                   and "VA_Estimation" not in str(p))
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0" + (out / name).read_bytes() + b"\0")
    assert len(names) == 6
    assert digest.hexdigest() == "7ae850bd06abaf562524a284e3a9e22812efceef577fbb9a9e378b2708c4982e"


def test_two_person_clips_share_the_audio_bit(small):
    out, _ = small
    labelled = _annotations(out)
    left = next(c for c in labelled if c.endswith("_left"))
    a, b = labelled[left][1], labelled[left.replace("_left", "_right")][1]
    both = (a != UNLABELED) & (b != UNLABELED)
    assert np.mean(a[both] % 2 == b[both] % 2) > 0.85  # the member: same audio (up to noise)


def test_rerun_replaces_a_demo_and_refuses_other_folders(tmp_path):
    out = tmp_path / "demo"
    generate(out, DemoConfig(clips=6, frames=16, size=32))
    generate(out, DemoConfig(clips=4, frames=16, size=32))
    # no clip left from the first run
    assert len(list((out / "cropped_aligned").iterdir())) == 4 + len(AU_ONLY_SPLITS)
    fresh = generate(tmp_path / "fresh", DemoConfig(clips=4, frames=16, size=32)).out
    assert _hashes(out) == _hashes(fresh)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(PipelineError, match="not a demo dataset"):
        generate(tmp_path / "mine", DemoConfig(clips=4, frames=16, size=32))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


def _app() -> typer.Typer:
    """The command group alone, as cli/main.py registers it (a callback keeps the group form)."""
    app = typer.Typer()
    app.callback()(lambda: None)
    demo.register(app)
    return app


def test_cli_writes_and_summarises(tmp_path):
    result = CliRunner().invoke(_app(), ["demo-data", str(tmp_path / "d"), "--clips", "4",
                                      "--frames", "16", "--size", "32", "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "MB on disk" in result.output and "test" in result.output
    assert (tmp_path / "d" / TEST_LIST).read_text().strip()


@pytest.mark.parametrize("args, message", [
    (["--clips", "3"], "--clips 3: need at least 4"),
    (["--frames", "2"], "--frames 2: need at least 16"),
    (["--size", "31"], "--size 31: need an even number"),
    ([], "not a demo dataset"),
])
def test_cli_rejects_bad_options_in_one_line(tmp_path, args, message):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("keep me")
    result = CliRunner().invoke(_app(), ["demo-data", str(tmp_path / "d"), *args])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0]
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["notes.txt"]


def _frame_features(out: Path, clip: str, fps: float, audio: np.ndarray, n: int):
    """Per frame: the face crop's pixels (4x4 RGB) and the librosa log-mel over its time span."""
    import librosa

    hop = 160
    mel = librosa.power_to_db(librosa.feature.melspectrogram(
        y=audio, sr=SAMPLE_RATE, n_fft=400, hop_length=hop, n_mels=64))
    image, sound = [], []
    for i in range(n):
        a = int(i / fps * SAMPLE_RATE / hop)
        b = max(a + 1, int((i + 1) / fps * SAMPLE_RATE / hop))
        sound.append(mel[:, a:b].mean(axis=1))
        path = out / "cropped_aligned" / clip / f"{i + 1:05d}.jpg"
        pixels = np.asarray(read_image(path).resize((4, 4))) if path.exists() else None
        image.append(None if pixels is None else pixels.reshape(-1) / 255.0)
    return image, sound


@pytest.mark.slow
def test_labels_need_both_modalities(tmp_path):
    """Face alone finds the pair, audio alone the member; only both find the class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = tmp_path / "demo"
    generate(out, DemoConfig(clips=6, frames=120, seed=0, size=32))
    sets = {"train": ([], [], []), "val": ([], [], [])}
    for clip, (split, labels) in _annotations(out).items():
        video = out / "videos" / f"{_video_of(clip)}.mp4"
        image, sound = _frame_features(out, clip, probe_video(video).fps,
                                       decode_audio(video, SAMPLE_RATE), len(labels))
        for i, label in enumerate(labels):
            if label != UNLABELED and image[i] is not None:
                for store, value in zip(sets[split], (image[i], sound[i], label)):
                    store.append(value)
    (img, snd, y), (img_v, snd_v, y_v) = (map(np.array, sets[s]) for s in ("train", "val"))

    def predict(train, target, test):
        model = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000))
        return model.fit(train, target).predict_proba(test), model.classes_

    pair, pairs = predict(img, y // 2, img_v)
    member, members = predict(snd, y % 2, snd_v)
    assert np.mean(pairs[pair.argmax(1)] == y_v // 2) > 0.9
    assert np.mean(members[member.argmax(1)] == y_v % 2) > 0.9
    joint = (pair[:, :, None] * member[:, None, :]).reshape(len(y_v), -1).argmax(1)
    fused = 2 * pairs[joint // len(members)] + members[joint % len(members)]

    def macro_f1(prediction):
        return f1_score(y_v, prediction, average="macro", labels=np.unique(y_v))

    image_only, classes = predict(img, y, img_v)
    audio_only, classes_a = predict(snd, y, snd_v)
    scores = (macro_f1(classes[image_only.argmax(1)]), macro_f1(classes_a[audio_only.argmax(1)]),
              macro_f1(fused))
    # Alone, each modality stays near its ceiling (0.50, 0.25); together they near 1 - noise.
    assert scores[0] < 0.6 and scores[1] < 0.35 and scores[2] > 0.85, scores
