"""The route on real footage with real speech (:mod:`real_audio`): ``faces`` on the AAC mp4 (real
MTCNN on carphone's man), then ``extract`` with the demo's audio extractors (``-e logmel -e tdnn``,
random seeded TDNN weights as the demo has them) and ``predict`` with a bundle, on every audio
case: AAC stereo mp4, Opus mkv, PCM mov, short, long, silent, late, no track and a track the
decoder refuses (garbled).

Every variant has the same 120 frames, so the crops ``faces`` wrote for the mp4 serve them all
(clips built from crop folder + video by :func:`stages.predict.crop_clip`, as ``predict`` and the
manifest reader do): MTCNN runs once, not eight times.
"""

import json
import shutil

import numpy as np
import pytest

import real_audio
import small_bundle
from cli.main import main
from pipeline.data.faces import weights
from pipeline.data.manifest import write_manifest
from pipeline.data.media import probe_video
from pipeline.features.store import FeatureStore
from stages.predict import crop_clip

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not weights.default_path().exists(),
                                 reason="MTCNN weights: `make faces-weights`")]


@pytest.fixture(scope="module")
def crops(talking_videos, tmp_path_factory):
    """``{variant: crop folder}``: the faces ``faces`` found in the mp4, one folder per variant."""
    root = tmp_path_factory.mktemp("talking-raw")
    raw = root / "raw"
    assert main(["faces", str(talking_videos["aac"]), "--out", str(raw), "--all-faces"]) == 0
    found = raw / "cropped_aligned" / "aac_t1"
    assert len(list(found.glob("*.jpg"))) >= 114  # a face on (nearly) every frame
    folders = {}
    for variant in real_audio.ALL:
        folders[variant] = root / "crops" / variant
        shutil.copytree(found, folders[variant])
    return folders


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A bundle of an image head (timm ``test_vit``) and an audio head (TDNN) trained 2 epochs on
    a small demo (:mod:`small_bundle`)."""
    return small_bundle.build(tmp_path_factory.mktemp("bundle"))[-1]


def test_extract_gives_every_frame_of_every_audio_case_a_row(talking_videos, crops, tmp_path,
                                                             capsys):
    clips = [crop_clip(v, crops[v], talking_videos[v], 25.0) for v in real_audio.ALL]
    assert [c.audio_path is None for c in clips] == [v == "mute" for v in real_audio.ALL]
    assert all(c.n_frames == 120 and c.fps == pytest.approx(float(real_audio.FPS)) for c in clips)
    write_manifest(tmp_path / "manifests" / "test.jsonl", clips)
    store_path = tmp_path / "features.zarr"
    capsys.readouterr()
    assert main(["extract", "--manifests", str(tmp_path / "manifests"), "--store", str(store_path),
                 "-e", "logmel", "-e", "tdnn", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    # The short track (2.02 s of 4.00 s) is padded, not dropped, and said in one line; the late
    # one (first sample at 1.0 s) too, and the garbled one (every frame's audio masked); no other.
    garbled, late, short = sorted(l for l in printed.splitlines() if l.startswith("short audio"))
    assert garbled.startswith(f"short audio garbled: {talking_videos['garbled']}: audio track "
                              "cannot be decoded (")
    assert garbled.endswith("audio features of all 120 frames are masked (every face kept)")
    assert short.startswith(f"short audio short: {talking_videos['short']}: audio ends at 2.02 s")
    assert "last 60 of 120 frames are masked (every face kept)" in short
    assert late == (f"short audio late: {talking_videos['late']}: audio starts at 1.00 s of the "
                    "video's 4.00 s: audio features of its first 30 of 120 frames are masked "
                    "(every face kept)")
    store = FeatureStore(store_path)
    assert set(store.clip_ids()) == set(real_audio.ALL)
    embeddings = sorted(n for n in store.array_names("aac") if n.startswith("tdnn"))
    assert embeddings
    for variant in real_audio.ALL:
        valid = store.read(variant, "valid")
        assert len(valid) == 120 and valid.sum() >= 114  # every face kept, whatever the audio
        if variant == "mute":  # no track: the face features stay, no audio rows, no crash
            assert store.clip_attrs(variant)["has_audio"] is False
            assert store.read(variant, "logmel").shape[0] == 0
            continue
        logmel = store.read(variant, "logmel")
        # the demo's log-mel (kim2023: hop 1024 at 16 kHz) over the whole 4 s, padded if short
        assert np.isfinite(logmel).all() and len(logmel) >= 4.0 * 16000 // 1024
        for name in embeddings:  # one row per frame, finite: silent and late tracks included
            rows = store.read(variant, name)
            assert rows.shape[0] == 120 and np.isfinite(rows).all(), (variant, name)
        names = store.array_names(variant)
        if variant == "short":
            audio = store.read(variant, "audio_valid")
            assert audio[:60].all() and not audio[60:].any()
        elif variant == "late":  # frames 0-29 end before 1.0 s: no audio in their span
            audio = store.read(variant, "audio_valid")
            assert not audio[:30].any() and audio[30:].all()
        elif variant == "garbled":  # silence in place of the track, none of it counted
            assert not store.read(variant, "audio_valid").any()
        else:
            assert "audio_valid" not in names, variant
    silent, speech = store.read("silent", embeddings[0]), store.read("aac", embeddings[0])
    assert np.ptp(silent, axis=0).max() < np.ptp(speech, axis=0).max()  # silence is flat
    # mp4, mkv and mov of the same speech give the same log-mel, within codec tolerance (dB)
    reference = store.read("pcm", "logmel")
    for variant in ("aac", "opus", "surround", "long", "early"):
        other = store.read(variant, "logmel")[:len(reference)]
        loud = reference > reference.max() - 40
        assert np.median(np.abs(other - reference[:len(other)])[loud]) < 0.5, variant


def test_predict_answers_every_frame_of_every_audio_case(talking_videos, crops, bundle, tmp_path,
                                                         capsys):
    import pandas as pd

    videos = talking_videos["aac"].parent
    out = tmp_path / "predicted"
    capsys.readouterr()
    assert main(["predict", *map(str, crops.values()), "--videos", str(videos), "--pipeline",
                 str(bundle), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    garbled, late, short = sorted(l for l in printed.splitlines() if l.startswith("short audio"))
    assert short.startswith(f"short audio short: {talking_videos['short']}: audio ends at 2.02 s")
    assert late.startswith(f"short audio late: {talking_videos['late']}: audio starts at 1.00 s")
    assert garbled.startswith(f"short audio garbled: {talking_videos['garbled']}: audio track "
                              "cannot be decoded")
    for variant in real_audio.ALL:
        table = pd.read_parquet(out / f"{variant}.parquet")
        assert list(table["frame"]) == list(range(1, 121))
        assert table["label"].between(0, 7).all()
        summary = json.loads((out / f"{variant}.json").read_text())
        assert summary["frames"] == 120
        assert ("audio" in summary) == (variant in ("short", "late", "garbled"))
    assert "audio ends at 2.02 s" in json.loads((out / "short.json").read_text())["audio"]
    assert probe_video(talking_videos["mute"]).has_audio is False
