"""Deliberately broken tiny datasets: each fault is repaired and counted, or its clip rejected with
one line naming the file, and the rest of the dataset is still read."""

import shutil

import numpy as np
import pytest

from pipeline.data.dataset import DatasetError, read_dataset
from pipeline.data.manifest import SPLITS

from .layout import (  # noqa: F401 (fixtures)
    HEADER_LINE,
    clean_layout,
    layout,
    write_annotation,
    write_clip_video,
)


def read(layout, **kwargs):
    """Read the layout and check what must hold for any input: no clip lost without a line."""
    reading = read_dataset(layout.root, **kwargs)
    kept = {c.clip_id for s in SPLITS for c in reading.clips[s]}
    rejected = {issue.clip for issue in reading.rejections}
    assert set(layout.split) <= kept | rejected, "a clip vanished without a rejection"
    for issue in reading.repairs + reading.rejections:
        assert issue.reason and "\n" not in issue.reason and issue.file
    return reading


def clips(reading):
    return {clip.clip_id: clip for s in SPLITS for clip in reading.clips[s]}


def only_issue(issues, clip_id):
    found = [issue for issue in issues if issue.clip == clip_id]
    assert len(found) == 1, found
    return found[0]


def assert_rest_read(reading, layout, *broken):
    assert set(clips(reading)) == set(layout.split) - set(broken)


def rejected(layout, reading, clip_id, kind, file, reason):
    issue = only_issue(reading.rejections, clip_id)
    assert (issue.kind, issue.file) == (kind, str(file))
    assert reason in issue.reason
    assert_rest_read(reading, layout, clip_id)


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"0\n1\n2\n", "line 1: missing header"),
        (b"Neutral,Anger,Disgust,Fear,Happy,Sad,Surprise,Other\n0\n", "line 1: header"),
        (HEADER_LINE.encode() + b"\n0\n9\n1\n", "line 3: label 9 is outside -1..7"),
        (HEADER_LINE.encode() + b"\n0\nhappy\n", "line 3: 'happy' is not an integer label"),
        (b"", "empty file"),
        (HEADER_LINE.encode() + b"\n0\n\xe9\n", "line 3: not UTF-8"),
    ],
    ids=["missing-header", "wrong-header", "out-of-range", "not-an-integer", "empty", "not-utf8"],
)
def test_bad_annotation_rejected(layout, content, reason):
    layout.val("vid3").write_bytes(content)
    reading = read(layout)
    rejected(layout, reading, "vid3", "bad_annotation", layout.val("vid3"), reason)
    assert reading.repairs == []


def test_labels_longer_than_video_truncated(layout):
    labels = np.r_[layout.labels["vid1"], [3, 3, 3]]
    write_annotation(layout.train("vid1"), labels)
    reading = read(layout)
    clip = clips(reading)["vid1"]
    assert clip.n_frames == 20
    np.testing.assert_array_equal(clip.labels, labels[:20])
    issue = only_issue(reading.repairs, "vid1")
    assert (issue.kind, issue.file) == ("labels_truncated", str(layout.train("vid1")))
    assert "23 labels for 20 video frames" in issue.reason
    assert reading.report()["repaired"] == {"labels_truncated": 1}
    assert reading.rejections == []


def test_labels_shorter_than_video_padded(layout):
    write_annotation(layout.train("vid2_right"), layout.labels["vid2_right"][:20])
    reading = read(layout)
    clip = clips(reading)["vid2_right"]
    np.testing.assert_array_equal(clip.labels[:20], layout.labels["vid2_right"][:20])
    assert clip.labels.tolist()[20:] == [-1] * 4 and clip.labels.dtype == np.int8
    assert only_issue(reading.repairs, "vid2_right").kind == "labels_padded"
    np.testing.assert_array_equal(clips(reading)["vid2_left"].labels, layout.labels["vid2_left"])


def test_missing_frame_folder_keeps_clip_for_audio(layout):
    shutil.rmtree(layout.frames("vid1"))
    reading = read(layout)
    clip = clips(reading)["vid1"]
    assert clip.frames_dir is None and clip.frame_path(0) is None
    assert clip.audio_path is not None and reading.faces["vid1"] == 0
    issue = only_issue(reading.repairs, "vid1")
    assert issue.kind == "no_faces" and issue.file.endswith("cropped_aligned/vid1")
    assert reading.report()["counts"]["train"]["faces"] == 23 + 21
    assert_rest_read(reading, layout)


def test_empty_frame_folder_keeps_clip_for_audio(layout):
    for crop in layout.frames("vid3").iterdir():
        crop.unlink()
    reading = read(layout)
    assert clips(reading)["vid3"].frames_dir == str(layout.frames("vid3"))
    issue = only_issue(reading.repairs, "vid3")
    assert issue.kind == "no_faces" and "no NNNNN.jpg face crops" in issue.reason


def test_no_faces_and_no_audio_rejected(layout):
    shutil.rmtree(layout.frames("vid4"))
    write_clip_video(layout.video("vid4"), 12, 10.0, audio=False)
    reading = read(layout)
    rejected(layout, reading, "vid4", "no_media", layout.root / "cropped_aligned" / "vid4",
             "no face-crop folder, and the video has no audio track")


def test_video_without_audio_kept(layout):
    write_clip_video(layout.video("vid2"), 24, 12.5, audio=False)
    reading = read(layout)
    for side in ("vid2_left", "vid2_right"):
        clip = clips(reading)[side]
        assert clip.audio_path is None and clip.video_path == str(layout.video("vid2"))
        issue = only_issue(reading.repairs, side)
        assert (issue.kind, issue.file) == ("no_audio", str(layout.video("vid2")))
    assert reading.report()["repaired"] == {"no_audio": 2}
    assert_rest_read(reading, layout)


@pytest.mark.parametrize(
    "content", [b"", b"not a video at all", None], ids=["empty", "garbage", "truncated"]
)
def test_unreadable_video_rejected(layout, content):
    video = layout.video("vid1")
    video.write_bytes(video.read_bytes()[:300] if content is None else content)
    reading = read(layout)
    rejected(layout, reading, "vid1", "unreadable_video", video, "unreadable video")


def test_unreadable_shared_video_rejects_both_sides(layout):
    layout.video("vid2").write_bytes(b"\x00" * 64)
    reading = read(layout)
    assert {i.clip for i in reading.rejections} == {"vid2_left", "vid2_right"}
    assert_rest_read(reading, layout, "vid2_left", "vid2_right")


def test_annotation_without_video_rejected(layout):
    layout.video("vid3").unlink()  # its face crops are still there
    reading = read(layout)
    rejected(layout, reading, "vid3", "no_video", layout.val("vid3"), "no video vid3 (.mp4/.avi/.mkv/.mov/.webm)")


def test_side_without_video_names_both_candidates(layout):
    write_annotation(layout.train("vid9_left"), [0, 1])
    reading = read(layout)
    issue = only_issue(reading.rejections, "vid9_left")
    assert issue.kind == "no_video" and "no video vid9_left or vid9 (.mp4/.avi/.mkv/.mov/.webm)" in issue.reason


def test_test_clip_without_video_rejected(layout):
    layout.test_list.write_text("vid4\nvid8\n")
    reading = read(layout)
    issue = only_issue(reading.rejections, "vid8")
    assert (issue.kind, issue.file) == ("no_video", str(layout.test_list))
    assert issue.reason.startswith("line 2: no video vid8")
    assert [c.clip_id for c in reading.clips["test"]] == ["vid4"]


def test_same_clip_in_train_and_validation(layout):
    shutil.copy(layout.train("vid1"), layout.val("vid1"))
    reading = read(layout)
    issue = only_issue(reading.rejections, "vid1")
    assert (issue.kind, issue.file) == ("duplicate", str(layout.val("vid1")))
    assert f"also in {layout.train('vid1')} (train), which is kept" in issue.reason
    assert [c.split for c in reading.clips["train"] if c.clip_id == "vid1"] == ["train"]
    assert_rest_read(reading, layout)


def test_same_clip_in_two_annotation_folders(layout):
    old = layout.root / "abaw5" / "EXPR_Classification_Challenge" / "Train_Set"
    old.mkdir(parents=True)
    shutil.copy(layout.train("vid1"), old / "vid1.txt")
    reading = read(layout)
    issue = only_issue(reading.rejections, "vid1")
    # The newer challenge's folder comes first, whatever the folder names around it.
    assert issue.file == str(old / "vid1.txt")
    assert str(layout.train("vid1")) in issue.reason


def test_duplicate_of_a_rejected_clip_says_so(layout):
    layout.train("vid1").write_bytes(b"")
    shutil.copy(layout.val("vid3"), layout.val("vid1"))
    reading = read(layout)
    reasons = sorted(i.kind for i in reading.rejections if i.clip == "vid1")
    assert reasons == ["bad_annotation", "duplicate"]
    assert "rejected too" in next(i.reason for i in reading.rejections if i.kind == "duplicate")


def test_test_list_naming_an_annotated_clip(layout):
    layout.test_list.write_text("vid4\nvid1\n")
    reading = read(layout)
    issue = only_issue(reading.rejections, "vid1")
    assert (issue.kind, issue.file) == ("duplicate", str(layout.test_list))
    assert issue.reason.startswith("line 2: ")


def test_test_list_naming_a_clip_twice(layout):
    layout.test_list.write_text("vid4\nvid4\n")
    reading = read(layout)
    assert only_issue(reading.repairs, "vid4").kind == "duplicate_entry"
    assert reading.rejections == [] and len(reading.clips["test"]) == 1


def test_crops_past_the_video_end_ignored(layout):
    for n in (21, 22):
        shutil.copy(layout.frames("vid1") / "00001.jpg", layout.frames("vid1") / f"{n:05d}.jpg")
    (layout.frames("vid1") / "thumbs.db").write_bytes(b"x")  # not a crop: ignored
    reading = read(layout)
    issue = only_issue(reading.repairs, "vid1")
    assert issue.kind == "frames_past_end" and issue.reason.startswith("2 face crops")
    assert reading.faces["vid1"] == layout.faces["vid1"]


def test_same_video_twice_uses_the_first(layout):
    # Folders in the order videos/, raw_videos/, batch1/, batch2/, and .mp4 before .avi.
    others = [layout.root / "raw_videos" / "vid1.mp4", layout.root / "videos" / "vid1.avi"]
    for other in others:
        write_clip_video(other, 20, 10.0)
    reading = read(layout)
    issue = only_issue(reading.repairs, "vid1")
    assert issue.kind == "video_duplicate" and issue.file == str(layout.video("vid1"))
    assert f"also found as {others[1]}, {others[0]}" in issue.reason
    assert clips(reading)["vid1"].video_path == issue.file


def test_same_crops_folder_twice_uses_cropped_aligned(layout):
    shutil.copytree(layout.frames("vid1"), layout.root / "cropped_aligned_new_50_vids" / "vid1")
    reading = read(layout)
    issue = only_issue(reading.repairs, "vid1")
    assert issue.kind == "frames_duplicate" and issue.file == str(layout.frames("vid1"))


def test_hidden_and_foreign_files_ignored(layout):
    (layout.annotations / "Train_Set" / "._vid1.txt").write_bytes(b"\x00\x05\x16\x07garbage")
    (layout.root / "videos" / "._vid1.mp4").write_bytes(b"\x00\x05\x16\x07garbage")
    (layout.annotations / "Train_Set" / "notes.md").write_text("# not an annotation\n")
    reading = read(layout)
    assert reading.repairs == reading.rejections == []
    assert_rest_read(reading, layout)


def test_everything_broken_at_once(layout):
    layout.val("vid3").write_bytes(b"\xff\xfe")
    layout.video("vid2").write_bytes(b"")
    write_annotation(layout.train("vid1"), layout.labels["vid1"][:10])
    layout.test_list.write_text("vid4\nghost\n")
    reading = read(layout)
    assert [c.clip_id for s in SPLITS for c in reading.clips[s]] == ["vid1", "vid4"]
    rejected_ids = sorted(i.clip for i in reading.rejections)
    assert rejected_ids == ["ghost", "vid2_left", "vid2_right", "vid3"]
    report = reading.report()
    assert report["rejected"] == {"bad_annotation": 1, "unreadable_video": 2, "no_video": 1}
    assert report["repaired"] == {"labels_padded": 1}


def test_unusable_roots(tmp_path, layout):
    with pytest.raises(DatasetError, match="no such dataset folder"):
        read_dataset(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        read_dataset(tmp_path / "file")
    shutil.rmtree(layout.annotations)
    with pytest.raises(DatasetError, match="no annotation folder"):
        read_dataset(layout.root)


def test_unreadable_test_lists(layout, tmp_path):
    with pytest.raises(DatasetError, match="no such test list"):
        read_dataset(layout.root, test_list=tmp_path / "missing.txt")
    layout.test_list.write_bytes(b"vid4\n\xffvid5\n")
    with pytest.raises(DatasetError, match=r"test_set\.txt: line 2: test list is not UTF-8"):
        read_dataset(layout.root)


@pytest.mark.parametrize("stem", ["a b", "-vid", "vid+é"])
def test_annotation_whose_name_is_no_clip_id_is_rejected(layout, stem):
    # Issue 37: a clip id names store folders; one that is not a safe path component is rejected
    # (the rule: docs/trust.md), the rest of the dataset is read.
    write_annotation(layout.train(stem), [0, 1])
    reading = read(layout)
    issue = only_issue(reading.rejections, stem)
    assert (issue.kind, issue.file) == ("bad_clip_id", str(layout.train(stem)))
    assert f"clip id {stem!r}" in issue.reason
    assert_rest_read(reading, layout)
