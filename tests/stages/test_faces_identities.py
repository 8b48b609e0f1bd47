"""Identities kept apart by ``faces``, on videos made of a real photograph with known truth: a shot
cut between two looks of a face (colour, then black and white mirrored, on another background),
and a group photo of four; and ``faces``'s bad input: truncated files, odd names, a killed run's
staging, progress per frame."""

import json
import shutil

import numpy as np
import pytest

from cli.main import main
from pipeline.data.faces import weights
from pipeline.data.faces.config import FacesConfig
from pipeline.data.faces.shots import cuts, histogram
from pipeline.data.faces.synthetic import group, moving_face, shot_cut
from pipeline.data.faces.track import iou
from pipeline.data.media import write_video
from pipeline.progress import ProgressEvent
from stages.faces import run_faces

needs_weights = pytest.mark.skipif(
    not weights.default_path().exists(),
    reason=f"MTCNN weights not at {weights.default_path()}: `make faces-weights`")


def test_the_histogram_rule_finds_the_cut_and_nothing_in_pans_and_zooms():
    video, first = shot_cut()
    assert cuts([histogram(f) for f in video.frames], 0.35) == [first]
    # the moving face pans and zooms (no cut); at frame 34 it pops back into an empty picture
    moving = moving_face(40)
    assert cuts([histogram(f) for f in moving.frames], 0.35) == [34]
    assert cuts([histogram(f) for f in group().frames], 0.35) == []


def _record(out, video):
    return json.loads((out / "faces" / f"{video}.json").read_text())


@needs_weights
def test_a_shot_cut_between_two_faces_gives_two_tracks_never_one_clip(tmp_path):
    video, first = shot_cut()
    n = len(video.frames)
    write_video(tmp_path / "v" / "cut.mp4", video.frames, 10.0)
    out = tmp_path / "out"
    run_faces([tmp_path / "v"], out, FacesConfig())
    record = _record(out, "cut")
    assert record["cuts"] == [first]
    spans = sorted((t["first"], t["last"]) for t in record["tracks"])
    assert spans == [(0, first - 1), (first, n - 1)]  # one track per shot, every frame found
    faces = np.load(out / "faces" / "cut.npz")["face"]
    # one person kept: the clip holds one shot's frames, never both identities
    assert faces.sum() == first and (faces[:first].all() or faces[first:].all())
    assert [t["clip"] for t in record["tracks"]].count("cut") == 1
    everyone = run_faces([tmp_path / "v"], tmp_path / "all", FacesConfig(all_faces=True))
    assert everyone.outcomes[0].clips == {"cut_t1": first, "cut_t2": n - first}
    for name, frames in (("cut_t1", range(first)), ("cut_t2", range(first, n))):
        quality = np.load(tmp_path / "all" / "faces" / f"{name}.npz")
        assert quality["face"].sum() == len(frames)
        for i in frames:
            assert iou(video.boxes[i], quality["box"][i]) > 0.6, (name, i)


@needs_weights
def test_a_group_photo_gives_one_track_per_person(tmp_path, capsys):
    video = group()
    write_video(tmp_path / "v" / "group.mp4", video.frames, 10.0)
    out = tmp_path / "out"
    assert main(["faces", str(tmp_path / "v"), "--out", str(out), "--all-faces"]) == 0
    names = [f"group_t{k}" for k in range(1, 5)]
    record = _record(out, "group")
    assert record["clips"] == names and len(record["tracks"]) == 4 and record["cuts"] == []
    for p, name in enumerate(names):  # left to right: person p of the truth
        quality = np.load(out / "faces" / f"{name}.npz")
        assert quality["face"].all()
        for i in range(len(video.frames)):
            assert iou(video.boxes[i, p], quality["box"][i]) > 0.6, (name, i)
    assert "group_t4" in capsys.readouterr().out
    # without --all-faces: one clip, and the record says the three others were left out
    assert main(["faces", str(tmp_path / "v"), "--out", str(tmp_path / "one")]) == 0
    assert "group: 3 of its 4 face tracks are in no clip" in " ".join(capsys.readouterr().out.split())
    assert list(np.load(tmp_path / "one" / "faces" / "group.npz")["face"]) == [True] * 12
    assert [t["clip"] for t in _record(tmp_path / "one", "group")["tracks"]].count(None) == 3


@needs_weights
def test_truncated_files_odd_names_and_stale_staging_are_one_line_each(tmp_path, capsys):
    from test_extract_short_audio import faststart, truncate

    folder = tmp_path / "v"
    frames = moving_face(30, 160, 120).frames
    write_video(folder / "whole.mp4", frames[:6], 10.0)
    write_video(folder / "cut.mp4", frames, 10.0)
    faststart(folder / "cut.mp4")  # its index first: a cut-off file still declares 30 frames
    truncate(folder / "cut.mp4", 0.5)
    write_video(folder / "...mp4", frames[:4], 10.0)
    out = tmp_path / "out"
    stale = out / ".faces-partial" / "whole-left-by-a-kill"
    stale.mkdir(parents=True)
    (stale / "00001.jpg").write_bytes(b"half")
    events: list[ProgressEvent] = []
    result = run_faces([folder], out, FacesConfig(), events.append)
    status = {o.video: (o.status, o.reason) for o in result.outcomes}
    assert status["whole"] == ("done", "")
    assert status["cut"][0] == "skipped" and "truncated file: the container declares 30" in status["cut"][1]
    assert status["...mp4"][0] == "skipped" and "rename the file" in status["...mp4"][1]
    assert all("\n" not in reason for _, reason in status.values())
    assert not stale.exists() and not any((out / ".faces-partial").iterdir())
    assert not (out / "cropped_aligned" / "cut").exists()
    # progress per frame: a total, then advances within the videos, summing to the total
    frames_events = [e for e in events if e.task == "frames"]
    assert frames_events[0].total == 6 + 30 + 4
    assert sum(e.advance for e in frames_events) == frames_events[0].total
    assert len([e for e in frames_events if e.advance]) >= 3 and "frames/s" in frames_events[-1].info
    code = main(["faces", str(folder), "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 1 and "skipped cut: " in printed and "skipped ...mp4: " in printed
    assert "Traceback" not in printed


@needs_weights
def test_a_second_run_on_the_same_root_is_refused_in_one_line(tmp_path, capsys):
    from pipeline.locks import owner_lock

    write_video(tmp_path / "v" / "a.mp4", moving_face(4, 160, 120).frames, 10.0)
    out = tmp_path / "out"
    out.mkdir()
    with owner_lock(out / ".faces-run", "faces output"):  # another run holds the root
        assert main(["faces", str(tmp_path / "v"), "--out", str(out)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "in use by" in err and "Traceback" not in err
    shutil.rmtree(out)


@needs_weights
def test_the_raw_manifest_counts_the_frames_that_decode(tmp_path):
    from test_extract_short_audio import faststart

    from pipeline.data.manifest import load_clips
    from pipeline.data.media import probe_video

    path = tmp_path / "v" / "short.mp4"
    write_video(path, moving_face(30, 160, 120).frames, 10.0)
    faststart(path)
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * 0.9)])  # the last 3 frames' data gone: 27 decode
    assert probe_video(path).n_frames == 30
    out = tmp_path / "out"
    result = run_faces([path], out, FacesConfig())
    assert result.outcomes[0].status == "done" and result.outcomes[0].frames == 27
    assert main(["manifest", str(out), "--out", str(tmp_path / "m")]) == 0
    (clip,) = load_clips(tmp_path / "m")
    assert clip.n_frames == 27 and clip.split == "test" and clip.video_path == str(path)
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["repaired"] == {"frames_decoded": 1, "no_audio": 1}
    # a damaged record rejects its clips in one line; the others stay
    (out / "faces" / "broken.json").write_text("{not json")
    assert main(["manifest", str(out), "--out", str(tmp_path / "m2"), "--allow-skips"]) == 0
    rejected = json.loads((tmp_path / "m2" / "report.json").read_text())["rejections"]
    assert [(r["clip"], r["kind"]) for r in rejected] == [("broken", "bad_faces_record")]
    assert [c.clip_id for c in load_clips(tmp_path / "m2")] == ["short"]
