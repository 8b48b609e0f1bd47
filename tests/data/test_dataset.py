"""The Aff-Wild2 reader on clean tiny layouts: what it finds where, and the manifests it writes."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.data.dataset import DatasetError, read_dataset, read_test_list
from pipeline.data.manifest import SPLITS, iter_manifest, load_clips, write_manifests
from pipeline.data.media import probe_video
from pipeline.progress import ProgressEvent

from .layout import clean_layout, layout, write_clip_video, write_frames  # noqa: F401 (fixtures)


def by_id(reading):
    return {clip.clip_id: clip for clips in reading.clips.values() for clip in clips}


def test_clean_layout(layout):
    reading = read_dataset(layout.root)
    assert reading.repairs == [] and reading.rejections == []
    assert {s: [c.clip_id for c in reading.clips[s]] for s in SPLITS} == {
        "train": ["vid1", "vid2_left", "vid2_right"], "val": ["vid3"], "test": ["vid4"]}
    clips = by_id(reading)
    for clip_id, clip in clips.items():
        # The video is the reference for frame count and rate.
        info = probe_video(clip.video_path)
        assert (clip.n_frames, clip.fps) == (info.n_frames, info.fps)
        assert (clip.n_frames, clip.fps) == (layout.n_frames[clip_id], layout.fps[clip_id])
        assert clip.split == layout.split[clip_id]
        assert clip.audio_path == clip.video_path
        assert clip.frames_dir == str(layout.frames(clip_id))
        assert reading.faces[clip_id] == layout.faces[clip_id]
        on_disk = sum(clip.frame_path(i).exists() for i in range(clip.n_frames))
        assert on_disk == layout.faces[clip_id]
        if clip.split == "test":
            assert clip.labels is None
        else:
            np.testing.assert_array_equal(clip.labels, layout.labels[clip_id])
    assert reading.test_list == str(layout.test_list)


def test_two_person_video_shares_file_and_audio(layout):
    clips = by_id(read_dataset(layout.root))
    left, right = clips["vid2_left"], clips["vid2_right"]
    assert left.video_id == right.video_id == "vid2"
    assert left.video_path == right.video_path == left.audio_path == str(layout.video("vid2"))
    assert left.frames_dir != right.frames_dir
    assert not np.array_equal(left.labels, right.labels)


def test_videos_found_in_every_folder_name(layout):
    clips = by_id(read_dataset(layout.root))
    assert clips["vid3"].video_path.endswith("/batch1/vid3.mp4")
    assert clips["vid4"].video_path.endswith("/raw_videos/vid4.mp4")
    assert clips["vid3"].frames_dir.endswith("/cropped_aligned_new_50_vids/vid3")
    # batch2/ nested inside videos/, as some copies of the release are unpacked.
    (layout.root / "videos" / "batch2").mkdir()
    layout.video("vid1").rename(layout.root / "videos" / "batch2" / "vid1.mp4")
    assert by_id(read_dataset(layout.root))["vid1"].video_path.endswith("/videos/batch2/vid1.mp4")


def test_folders_nested_as_unzipped(layout):
    for name in ("cropped_aligned", "videos"):
        (layout.root / name).rename(layout.root / "tmp")
        (layout.root / name).mkdir()
        (layout.root / "tmp").rename(layout.root / name / name)
    reading = read_dataset(layout.root)
    assert reading.repairs == reading.rejections == []
    assert by_id(reading)["vid1"].frames_dir.endswith("/cropped_aligned/cropped_aligned/vid1")


def test_avi_video(layout):
    avi = layout.root / "videos" / "vid1.avi"
    write_clip_video(avi, 20, 10.0)
    layout.video("vid1").unlink()
    reading = read_dataset(layout.root)
    clip = by_id(reading)["vid1"]
    assert clip.video_path == str(avi)
    assert clip.n_frames == probe_video(avi).n_frames  # avi headers may count one frame more
    assert clip.labels.tolist()[:20] == layout.labels["vid1"].tolist()


@pytest.mark.parametrize(
    "challenge", ["EXPR_Classification_Challenge", "EXPR_Recognition_Challenge"]
)
def test_annotation_folder_names_and_places(layout, challenge):
    target = layout.root / challenge
    shutil.move(layout.annotations, target)  # directly under the root, either challenge's name
    reading = read_dataset(layout.root)
    assert [c.clip_id for c in reading.clips["train"]] == ["vid1", "vid2_left", "vid2_right"]
    assert reading.rejections == []


def test_annotations_found_a_few_levels_down(layout):
    deep = layout.root / "a" / "b"
    deep.mkdir(parents=True)
    shutil.move(layout.root / "annotations", deep / "annotations")  # root/a/b/annotations/EXPR_*
    assert len(read_dataset(layout.root).clips["train"]) == 3


def test_test_list_formats(layout, tmp_path):
    other = tmp_path / "names.txt"
    other.write_bytes(
        b"\xef\xbb\xbfvideo_name\r\n# the EXPR test videos\r\n\r\n batch2/vid4.mp4 \r\n"
    )
    assert read_test_list(other) == [(4, "vid4")]
    reading = read_dataset(layout.root, test_list=other)
    assert reading.test_list == str(other)
    assert [c.clip_id for c in reading.clips["test"]] == ["vid4"]


def test_test_list_discovery(layout):
    layout.test_list.unlink()
    assert read_dataset(layout.root).clips["test"] == []  # no list: an empty test split
    nested = layout.annotations / "Test_Set.txt"
    nested.write_text("vid4\n")
    assert read_dataset(layout.root).test_list == str(nested)
    # Lists of the other challenges beside it: the EXPR one is chosen.
    (layout.root / "VA_Estimation_Challenge_test_set_release.txt").write_text("vid1\n")
    expr = layout.root / "Expr_Challenge_test_set_release.txt"
    expr.write_text("vid4\n")
    assert read_dataset(layout.root).test_list == str(expr)
    (layout.root / "EXPR_test_names.txt").write_text("vid4\n")
    with pytest.raises(DatasetError, match="several test lists found.*--test-list"):
        read_dataset(layout.root)
    (layout.root / "latest.txt").write_text("not a test list\n")  # "test" inside a word: ignored
    assert len(read_dataset(layout.root, test_list=expr).clips["test"]) == 1


def test_crops_are_listed_not_opened(layout, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the reader opened an image")

    monkeypatch.setattr(Image, "open", refuse)
    assert len(by_id(read_dataset(layout.root))) == 5


def test_progress_events(layout):
    events: list[ProgressEvent] = []
    read_dataset(layout.root, progress=events.append)
    assert events[0].task == "clips" and events[0].total == 5
    assert sum(e.advance for e in events) == 5


def test_manifest_round_trip(layout, tmp_path):
    reading = read_dataset(layout.root)
    out = tmp_path / "manifests"
    (out / "test.jsonl").parent.mkdir()
    (out / "test.jsonl").write_text("stale\n")
    report = write_manifests(reading, out)
    for split in SPLITS:
        assert list(iter_manifest(out / f"{split}.jsonl")) == reading.clips[split]
    assert load_clips(out) == [c for s in SPLITS for c in reading.clips[s]]
    written = json.loads(report.read_text())
    assert written["counts"] == reading.counts()
    train = written["counts"]["train"]
    assert train["clips"] == 3 and train["frames"] == 20 + 24 + 24
    assert train["faces"] == sum(layout.faces[c] for c in ("vid1", "vid2_left", "vid2_right"))
    labels = np.concatenate([layout.labels[c] for c in ("vid1", "vid2_left", "vid2_right")])
    per_class = np.bincount(labels[labels >= 0], minlength=8).tolist()
    assert list(train["labelled"].values()) == per_class
    assert train["unlabelled"] == int((labels == -1).sum())
    assert written["counts"]["test"]["unlabelled"] == 12
    assert written["repairs"] == written["rejections"] == []


def test_write_frames_helper_leaves_gaps(tmp_path):
    folder = write_frames(tmp_path / "c", 5, missing=(1, 3))
    assert sorted(p.name for p in folder.iterdir()) == ["00001.jpg", "00003.jpg", "00005.jpg"]
