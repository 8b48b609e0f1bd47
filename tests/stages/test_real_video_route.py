"""The raw-video route on real footage in the video shapes people's files come in
(:mod:`real_video`): ``faces`` (real MTCNN on carphone's man), ``manifest`` and ``predict`` with a
bundle on a phone's rotated clips, a variable frame rate mkv and avi (whose dropped frames read
as a truncated file before), odd dimensions and HEVC; a file
whose first packets are garbled is skipped in one line and loses nothing else."""

import json
import shutil

import pytest

import real_video
from cli.main import main
from pipeline.data.faces import weights
from pipeline.data.manifest import load_clips
from test_real_speech_route import bundle  # noqa: F401  (the small image + audio bundle)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not weights.default_path().exists(),
                                 reason="MTCNN weights: `make faces-weights`")]

ROUTE = ("rotate90", "rotate180", "rotate270", "vfr_mkv", "vfr_avi", "odd", "hevc")


def test_faces_finds_the_man_upright_in_every_shape_and_skips_a_garbled_file(
        shaped_videos, tmp_path, capsys):
    """A face in (nearly) every frame of each shape, in one track, whatever the rotation (before
    the display matrix was applied, MTCNN found the man on his side in 85, 30 and 113 of 120
    frames of rotate90, rotate180 and rotate270, its boxes in the stored picture); the
    rotation is in the video's record; every frame counted; the garbled file is one line."""
    videos, raw = tmp_path / "videos", tmp_path / "raw"
    videos.mkdir()
    for name in (*ROUTE, "garbled_start"):
        shutil.copy(shaped_videos[name], videos)
    capsys.readouterr()
    assert main(["faces", str(videos), "--out", str(raw), "--allow-skips"]) == 0
    printed = capsys.readouterr().out
    skipped = [line for line in printed.splitlines() if line.startswith("skipped")]
    assert skipped == [f"skipped garbled_start: {videos / 'garbled_start.mp4'}: unreadable video "
                       "([Errno 1094995529] Invalid data found when processing input: "
                       "'avcodec_send_packet()')"]
    for name in ROUTE:
        stem = shaped_videos[name].stem
        record = json.loads((raw / "faces" / f"{stem}.json").read_text())
        assert record["frames"] == 120 and record["cuts"] == [], name
        assert record["faces"][stem] >= 114, (name, record["faces"])  # 120 of 120 measured
        assert len(record["tracks"]) == 1, name
        rotation = {"rotate90": 270, "rotate180": 180, "rotate270": 90}.get(name)
        assert record.get("rotation") == rotation, name
    assert not (raw / "faces" / "garbled_start.json").exists()
    capsys.readouterr()
    assert main(["manifest", str(raw), "--out", str(tmp_path / "m")]) == 0
    vfr = videos / "vfr_mkv.mkv"
    assert (f"vfr_mkv: {vfr}: variable frame rate: its frames are put at 20.09 fps (their "
            "average); one is 0.33 s off its timestamp, and its audio window with it "
            "[variable_frame_rate]") in capsys.readouterr().out
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["repaired"]["variable_frame_rate"] == 2  # the mkv and the avi
    clips = {c.clip_id: c for c in load_clips(tmp_path / "m")}
    assert set(clips) == {shaped_videos[n].stem for n in ROUTE}
    assert all(c.n_frames == 120 for c in clips.values())
    assert clips["vfr_mkv"].fps == pytest.approx(120 / 5.972, rel=1e-3)  # measured, not 29.97


def test_predict_answers_every_frame_of_a_rotated_and_a_variable_rate_video(
        shaped_videos, bundle, tmp_path, capsys):  # noqa: F811
    """``predict`` on the raw files: a row per frame, a face in (nearly) every one, and the
    variable rate video's frames at their times."""
    import pandas as pd

    out = tmp_path / "predicted"
    names = ("rotate90", "vfr_mkv")
    capsys.readouterr()
    assert main(["predict", *(str(shaped_videos[n]) for n in names), "--pipeline", str(bundle),
                 "--out", str(out)]) == 0
    timing = (f"vfr_mkv: {shaped_videos['vfr_mkv']}: variable frame rate: its frames are put at "
              "20.09 fps (their average); one is 0.33 s off its timestamp, and its audio window "
              "with it")
    assert timing in capsys.readouterr().out.splitlines()
    assert json.loads((out / "vfr_mkv.json").read_text())["timing"] == timing.split(": ", 1)[1]
    assert "timing" not in json.loads((out / "rotate90.json").read_text())
    for name in names:
        stem = shaped_videos[name].stem
        table = pd.read_parquet(out / f"{stem}.parquet")
        assert list(table["frame"]) == list(range(1, 121))
        assert table["label"].between(0, 7).all()
        assert table["face"].sum() >= 114
        assert json.loads((out / f"{stem}.json").read_text())["frames"] == 120
    # a frame's time is i / fps at the measured rate: the last frame at 5.92 s, its timestamp
    # at 5.94 s (before: 3.97 s, the header's 29.97 fps)
    last = pd.read_parquet(out / "vfr_mkv.parquet")["time"].iloc[-1]
    assert last == pytest.approx(real_video.VFR_TICKS[-1] / (30000 / 1001), abs=0.05)
