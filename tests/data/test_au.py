"""AU annotations in the reader: attached to expression clips, AU-only clips, the AU file rules
(each on a broken file), the manifest round trip and the leakage guard of paper 003 section 4.1."""

import json

import numpy as np
import pytest

from cli.main import main
from pipeline.data.dataset import read_dataset
from pipeline.data.manifest import SPLITS, Clip, load_clips, task_clips, write_manifests

from .layout import (  # noqa: F401 (fixtures)
    AU_HEADER_LINE,
    AU_ONLY_VIDEOS,
    AU_SPLITS,
    au_text,
    clean_layout,
    write_au_annotation,
    write_au_layout,
)
from .test_bad_input import only_issue


@pytest.fixture(scope="module")
def clean_au_layout(clean_layout, tmp_path_factory):
    layout = clean_layout.copy_to(tmp_path_factory.mktemp("au") / "root")
    return layout, write_au_layout(layout)


@pytest.fixture
def au_layout(clean_au_layout, tmp_path):
    layout, written = clean_au_layout
    return layout.copy_to(tmp_path / "root"), written


def by_id(reading):
    return {clip.clip_id: clip for clip in reading.all_clips()}


def test_au_labels_attached_and_au_only_clips_apart(au_layout, clean_layout):
    layout, written = au_layout
    reading = read_dataset(layout.root)
    assert reading.repairs == reading.rejections == []
    clips = by_id(reading)
    for clip_id, split in AU_SPLITS.items():
        assert clips[clip_id].au_split == split
        assert clips[clip_id].au_labels.dtype == np.int8
        np.testing.assert_array_equal(clips[clip_id].au_labels, written[clip_id])
    assert [c.clip_id for c in reading.au_only] == sorted(AU_ONLY_VIDEOS)
    for clip in reading.au_only:
        assert clip.labels is None and clip.split == clip.au_split
        assert clip.expr_split is None and clip.n_frames == AU_ONLY_VIDEOS[clip.clip_id][0]
        assert reading.faces[clip.clip_id] == clip.n_frames - 1
    assert clips["vid4"].au_labels is None and clips["vid4"].task_split("au") is None
    # The expression splits are exactly those of the dataset without AU files.
    plain = read_dataset(clean_layout.root)
    for split in SPLITS:
        assert [c.clip_id for c in reading.clips[split]] == [c.clip_id for c in plain.clips[split]]
        for mine, theirs in zip(reading.clips[split], plain.clips[split]):
            assert np.array_equal(mine.labels, theirs.labels) or mine.labels is theirs.labels
    assert [c.clip_id for c in task_clips(reading.all_clips(), "au", "val")] \
        == ["vid2_left", "vid6"]
    assert [c.clip_id for c in task_clips(reading.all_clips(), "expr", "val")] == ["vid3"]


def test_counts_per_au_split(au_layout):
    layout, written = au_layout
    counts = read_dataset(layout.root).counts()
    for split in ("train", "val"):
        rows = np.concatenate([written[c] for c, s in AU_SPLITS.items() if s == split])
        labelled = rows[rows[:, 0] >= 0]
        au = counts[split]["au"]
        assert au["clips"] == sum(s == split for s in AU_SPLITS.values())
        assert au["labelled"] == len(labelled) and au["unlabelled"] == len(rows) - len(labelled)
        assert list(au["active"].values()) == labelled.sum(axis=0).tolist()
    assert counts["test"]["au"]["clips"] == 0
    # The expression counts do not see the AU-only clips.
    assert counts["train"]["clips"] == 3 and counts["val"]["clips"] == 1


def test_manifest_round_trip_and_old_records(au_layout, tmp_path):
    layout, _ = au_layout
    reading = read_dataset(layout.root)
    out = tmp_path / "m"
    write_manifests(reading, out)
    assert load_clips(out) == [c for s in SPLITS for c in reading.clips[s]]
    assert load_clips(out, au_only=True) == reading.all_clips()
    assert load_clips(out, [], au_only=True) == reading.au_only
    records = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    vid1 = next(r for r in records if r["clip_id"] == "vid1")
    # Packed: one code per frame, bit k = the k-th AU; runs like the expression labels.
    codes = np.repeat(*np.array(vid1["au_labels"]).T)
    au = next(c for c in reading.clips["train"] if c.clip_id == "vid1").au_labels
    expected = np.where(au[:, 0] < 0, -1, (au.astype(int) << np.arange(12)).sum(axis=1))
    np.testing.assert_array_equal(codes, expected)
    # A clip without AU labels is written exactly as before AU existed, and such records load.
    vid2_right = next(r for r in records if r["clip_id"] == "vid2_right")
    assert list(vid2_right) == ["clip_id", "split", "video_id", "n_frames", "fps", "frames_dir",
                                "video_path", "audio_path", "labels"]
    old = Clip.from_json(vid2_right)
    assert old.au_labels is None and old.au_split is None and old.exclude_from == ()
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "val.jsonl").write_text(json.dumps(vid2_right | {"split": "val"}) + "\n")
    assert [c.clip_id for c in load_clips(tmp_path / "old", au_only=True)] == ["vid2_right"]


def test_leakage_guard_clip_mode(au_layout):
    layout, written = au_layout
    reading = read_dataset(layout.root)
    clips = by_id(reading)
    leakage = reading.leakage
    assert leakage["au_val_in_expr_train"] == ["vid2_left"]
    assert leakage["expr_val_in_au_train"] == ["vid3"]
    assert leakage["excluded_clips"] == {"au_val": 1, "expr_val": 1}
    assert leakage["excluded_frames"] == {
        "au_val": int((written["vid2_left"][:, 0] >= 0).sum()),
        "expr_val": int((layout.labels["vid3"] >= 0).sum())}
    assert clips["vid2_left"].exclude_from == ("au_val",)
    assert clips["vid3"].exclude_from == ("expr_val",)
    assert all(c.exclude_from == () for i, c in clips.items() if i not in ("vid2_left", "vid3"))
    assert not clips["vid2_left"].scored_in("au") and clips["vid6"].scored_in("au")
    assert not clips["vid3"].scored_in("expr") and clips["vid3"].scored_in("au", "train")
    # What a scorer reads: the excluded task's labels all -1, the other task's untouched.
    assert (clips["vid2_left"].scoring_labels("au") == -1).all()
    np.testing.assert_array_equal(clips["vid2_left"].scoring_labels("expr"),
                                  layout.labels["vid2_left"])
    assert (clips["vid3"].scoring_labels("expr") == -1).all()
    assert clips["vid3"].scoring_labels("expr").shape == (16,)
    np.testing.assert_array_equal(clips["vid3"].scoring_labels("au"), written["vid3"])
    assert clips["vid4"].scoring_labels("au") is None and clips["vid6"].scoring_labels("expr") \
        is None
    with pytest.raises(ValueError, match="unknown task"):
        clips["vid4"].scoring_labels("valence")
    assert reading.report()["leakage"] == leakage


def test_leakage_guard_off_lists_but_keeps(au_layout):
    layout, _ = au_layout
    reading = read_dataset(layout.root, leakage_guard="off")
    assert reading.leakage["au_val_in_expr_train"] == ["vid2_left"]
    assert reading.leakage["excluded_clips"] == {"au_val": 0, "expr_val": 0}
    assert all(c.exclude_from == () for c in reading.all_clips())
    assert by_id(reading)["vid2_left"].scored_in("au")


def test_leakage_guard_video_mode_follows_the_shared_video(au_layout):
    layout, _ = au_layout
    # "vid2" itself is AU-only (no crops: kept for its audio), but its video holds the two
    # expression training clips vid2_left/_right.
    write_au_annotation(layout.au_val("vid2"), np.zeros((24, 12), np.int8))
    by_clip = read_dataset(layout.root, leakage_guard="clip").leakage
    by_video = read_dataset(layout.root, leakage_guard="video").leakage
    assert by_clip["au_val_in_expr_train"] == ["vid2_left"]
    assert by_video["au_val_in_expr_train"] == ["vid2", "vid2_left"]
    with pytest.raises(ValueError, match="leakage guard 'both'"):
        read_dataset(layout.root, leakage_guard="both")


ROW = b"0,1,0,0,1,0,0,0,0,0,1,0"
HEAD = AU_HEADER_LINE.encode()


@pytest.mark.parametrize(
    "content, reason",
    [
        (ROW + b"\n" + ROW + b"\n", "line 1: missing header"),
        (b"Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n4\n", "line 1: header"),
        (HEAD.replace(b"AU26", b"AU27") + b"\n" + ROW + b"\n", "line 1: header"),
        (HEAD + b"\n" + ROW + b"\n0,1,0\n", "line 3: 3 values, want 12"),
        (HEAD + b"\n" + ROW + b",1\n", "line 2: 13 values, want 12"),
        (HEAD + b"\n" + ROW.replace(b"1,0,0,0,0,0", b"2,0,0,0,0,0") + b"\n",
         "line 2: AU7 value 2 is outside -1, 0, 1"),
        (HEAD + b"\n" + ROW.replace(b"0,1,0,0", b"0,yes,0,0", 1) + b"\n",
         "line 2: AU2 value 'yes' is not an integer"),
        (HEAD + b"\n" + ROW.replace(b"0,1,0,0", b"0,0.5,0,0", 1) + b"\n",
         "line 2: AU2 value '0.5' is not an integer"),
        (HEAD + b"\n-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,0\n", "line 2: -1 mixed with 0/1"),
        (HEAD + b"\n" + ROW + b"\n\n" + ROW + b"\n", "line 3: blank line"),
        (HEAD + b"\n", "header but no rows"),
        (b"", "empty file"),
        (HEAD + b"\n" + ROW + b"\n\xe9\n", "line 3: not UTF-8"),
        (AU_HEADER_LINE.encode("utf-16") + b"\n", "UTF-16"),
    ],
    ids=["missing-header", "expr-header", "wrong-header", "short-row", "long-row",
         "out-of-range", "not-an-integer", "fraction", "mixed-minus-one", "blank-line", "no-rows",
         "empty", "not-utf8", "utf16"],
)
def test_bad_au_file_rejected_clip_kept_for_expression(au_layout, content, reason):
    layout, _ = au_layout
    layout.au_train("vid1").write_bytes(content)
    layout.au_val("vid6").write_bytes(content)  # an AU-only clip: nothing is left of it
    reading = read_dataset(layout.root)
    for clip_id, path in (("vid1", layout.au_train("vid1")), ("vid6", layout.au_val("vid6"))):
        issue = only_issue(reading.rejections, clip_id)
        assert (issue.kind, issue.file) == ("bad_au_annotation", str(path))
        assert reason in issue.reason and "\n" not in issue.reason
    clips = by_id(reading)
    assert clips["vid1"].au_labels is None and clips["vid1"].labels is not None
    assert "vid6" not in clips and [c.clip_id for c in reading.au_only] == ["vid5"]
    assert reading.repairs == []


@pytest.mark.parametrize("newline, bom", [("\r\n", False), ("\n", True), ("\r\n", True)])
def test_crlf_and_bom_tolerated(au_layout, newline, bom):
    layout, written = au_layout
    data = au_text(written["vid1"].tolist(), newline=newline).encode()
    layout.au_train("vid1").write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)
    reading = read_dataset(layout.root)
    assert reading.repairs == reading.rejections == []
    np.testing.assert_array_equal(by_id(reading)["vid1"].au_labels, written["vid1"])


def test_au_rows_longer_than_video_truncated(au_layout):
    layout, written = au_layout
    rows = np.concatenate([written["vid1"], np.ones((3, 12), np.int8)])
    write_au_annotation(layout.au_train("vid1"), rows)
    reading = read_dataset(layout.root)
    issue = only_issue(reading.repairs, "vid1")
    assert (issue.kind, issue.file) == ("au_labels_truncated", str(layout.au_train("vid1")))
    assert "23 labels for 20 video frames" in issue.reason
    np.testing.assert_array_equal(by_id(reading)["vid1"].au_labels, written["vid1"])


def test_au_rows_shorter_than_video_padded(au_layout):
    layout, written = au_layout
    write_au_annotation(layout.au_val("vid6"), written["vid6"][:10])
    reading = read_dataset(layout.root)
    assert only_issue(reading.repairs, "vid6").kind == "au_labels_padded"
    au = by_id(reading)["vid6"].au_labels
    np.testing.assert_array_equal(au[:10], written["vid6"][:10])
    assert (au[10:] == -1).all() and au.shape == (14, 12)


def test_same_clip_in_both_au_folders(au_layout):
    layout, written = au_layout
    write_au_annotation(layout.au_val("vid1"), written["vid1"])
    reading = read_dataset(layout.root)
    issue = only_issue(reading.rejections, "vid1")
    assert (issue.kind, issue.file) == ("au_duplicate", str(layout.au_val("vid1")))
    assert f"also in {layout.au_train('vid1')} (train), whose AU labels are kept" in issue.reason
    assert by_id(reading)["vid1"].au_split == "train"


def test_au_file_of_a_rejected_expression_clip(au_layout):
    layout, _ = au_layout
    layout.train("vid1").write_bytes(b"no header\n1\n")
    reading = read_dataset(layout.root)
    kinds = sorted(i.kind for i in reading.rejections if i.clip == "vid1")
    assert kinds == ["au_clip_rejected", "bad_annotation"]
    assert "vid1" not in by_id(reading)


def test_au_only_clip_without_video_rejected(au_layout):
    layout, _ = au_layout
    layout.video("vid5").unlink()
    reading = read_dataset(layout.root)
    issue = only_issue(reading.rejections, "vid5")
    assert (issue.kind, issue.file) == ("no_video", str(layout.au_train("vid5")))
    assert [c.clip_id for c in reading.au_only] == ["vid6"]


def test_au_annotations_alone_are_a_dataset(au_layout):
    layout, _ = au_layout
    for split_dir in ("Train_Set", "Validation_Set"):
        for path in (layout.annotations / split_dir).iterdir():
            path.unlink()
    (layout.annotations / "Train_Set").rmdir()
    (layout.annotations / "Validation_Set").rmdir()
    layout.test_list.unlink()
    reading = read_dataset(layout.root)
    assert all(reading.clips[s] == [] for s in SPLITS)
    assert [c.clip_id for c in reading.au_only] == sorted(AU_SPLITS)
    assert reading.leakage["au_val_in_expr_train"] == []


def test_cli_table_shows_au_counts_and_the_guard(au_layout, tmp_path, capsys):
    layout, _ = au_layout
    code = main(["manifest", str(layout.root), "--out", str(tmp_path / "m")])
    out, err = capsys.readouterr()
    assert code == 0, err
    for row in ("AU clips", "AU labelled", "AU1", "AU26", "AU unlabelled"):
        assert row in out
    assert "2 clip(s) with AU labels only" in out
    assert "leakage guard: 1 AU validation clip(s) in the expression training split, left out " \
           "of the AU validation scores" in out and "vid2_left" in out
    assert "1 expression validation clip(s) in the AU training split" in out
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert report["au_only_clips"] == 2 and report["leakage"]["guard"] == "clip"
    code = main(["manifest", str(layout.root), "--out", str(tmp_path / "n"),
                 "--leakage-guard", "off"])
    out, _ = capsys.readouterr()
    assert code == 0 and "kept in its scores (--leakage-guard off)" in out
    assert all(c.exclude_from == () for c in load_clips(tmp_path / "n", au_only=True))


@pytest.mark.parametrize("fields, message", [
    (dict(au_labels=np.zeros((4, 12), np.int8)), "come together"),
    (dict(au_split="val"), "come together"),
    (dict(au_labels=np.zeros((4, 11), np.int8), au_split="val"), r"shape \(4, 11\)"),
    (dict(au_labels=np.zeros((4, 12), np.int8), au_split="test"), "unknown AU split 'test'"),
    (dict(exclude_from=("test",)), "exclude_from"),
])
def test_clip_refuses_inconsistent_au_fields(fields, message):
    with pytest.raises(ValueError, match=message):
        Clip("c", "train", "c", 4, 10.0, None, None, None, np.zeros(4, np.int8), **fields)


def test_a_test_clip_with_au_labels_keeps_its_test_role(au_layout):
    layout, _ = au_layout
    rows = np.ones((12, 12), np.int8)
    write_au_annotation(layout.au_train("vid4"), rows)
    reading = read_dataset(layout.root)
    assert reading.rejections == []
    clip = by_id(reading)["vid4"]
    assert clip in reading.clips["test"] and clip.labels is None
    assert (clip.task_split("expr"), clip.task_split("au")) == ("test", "train")
    np.testing.assert_array_equal(clip.au_labels, rows)
    assert clip.exclude_from == ()  # the guard only concerns validation splits
