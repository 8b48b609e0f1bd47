"""VA annotations in the reader: attached beside EXPR and AU labels, VA-only clips, -5 rows, the
length repairs, one-line rejections of bad files, the manifest round trip, and manifests without
VA unchanged."""

import json

import numpy as np
import pytest

from pipeline.data.dataset import read_dataset
from pipeline.data.labels import AnnotationError, parse_va_annotation
from pipeline.data.manifest import Clip, load_clips, write_manifests

from .layout import (  # noqa: F401 (fixtures)
    AU_ONLY_VIDEOS,
    clean_layout,
    write_au_layout,
    write_clip_video,
    write_frames,
)
from .test_bad_input import only_issue


def va_text(rows) -> str:
    return "valence,arousal\n" + "".join(f"{v:.4f},{a:.4f}\n" for v, a in rows)


def va_dir(layout, split):
    return layout.root / "annotations" / "VA_Estimation_Challenge" / split


def write_va(layout, clip_id, split, rows):
    folder = va_dir(layout, "Train_Set" if split == "train" else "Validation_Set")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{clip_id}.txt").write_text(va_text(rows), encoding="utf-8")


def rows_for(n, seed):
    rows = np.round(np.random.default_rng(seed).uniform(-1, 1, (n, 2)), 4)
    rows[1] = -5
    return rows


@pytest.fixture
def va_layout(clean_layout, tmp_path):
    layout = clean_layout.copy_to(tmp_path / "root")
    write_au_layout(layout)  # vid5, vid6: AU-only clips
    write_clip_video(layout.video("vid7"), 10, 10.0)  # a clip with VA labels only
    write_frames(layout.frames("vid7"), 10)
    written = {"vid1": rows_for(20, 0), "vid3": rows_for(16, 1), "vid5": rows_for(18, 2),
               "vid7": rows_for(10, 3)}
    for clip_id, split in (("vid1", "train"), ("vid3", "val"), ("vid5", "train"),
                           ("vid7", "val")):
        write_va(layout, clip_id, split, written[clip_id])
    return layout, written


def test_parse_va_rules():
    values = parse_va_annotation(b"valence,arousal\r\n0.5,-0.25\n-5,-5\n0.1,-5\n\n")
    assert values.dtype == np.float32
    np.testing.assert_array_equal(values, [[0.5, -0.25], [-5, -5], [-5, -5]])
    for data, reason in ((b"valence,arousal\n0.5,1.5\n", "line 2: arousal 1.5 is outside"),
                         (b"0.5,0.5\n", "missing header"),
                         (b"Neutral,Anger\n0\n", "header"),
                         (b"valence,arousal\nnan,0\n", "line 2: 'nan,0' is not two numbers"),
                         (b"valence,arousal\n0.1,0.2\n\n0.3,0.4\n", "line 3: blank line"),
                         (b"valence,arousal\n", "header but no rows")):
        with pytest.raises(AnnotationError, match=reason) as e:
            parse_va_annotation(data, "f.txt")
        assert str(e.value).startswith("f.txt: ") and "\n" not in str(e.value)


def test_va_labels_attached_to_every_kind_of_clip(va_layout):
    layout, written = va_layout
    reading = read_dataset(layout.root)
    assert reading.rejections == []
    clips = {c.clip_id: c for c in reading.all_clips()}
    for clip_id, split in (("vid1", "train"), ("vid3", "val"), ("vid5", "train"),
                           ("vid7", "val")):
        assert clips[clip_id].va_split == split
        np.testing.assert_array_equal(clips[clip_id].va_labels,
                                      written[clip_id].astype(np.float32))
    assert clips["vid1"].label_tasks == ("expr", "au", "va")
    assert clips["vid5"].label_tasks == ("au", "va")
    assert clips["vid7"].label_tasks == ("va",) and clips["vid7"].task_split("va") == "val"
    assert clips["vid7"].expr_split is None and clips["vid7"].au_split is None
    assert clips["vid2_left"].label_tasks == ("expr", "au")
    assert [c.clip_id for c in reading.au_only] == ["vid5", "vid6", "vid7"]


def test_va_manifest_round_trip_and_without_va_unchanged(va_layout, clean_layout, tmp_path):
    layout, written = va_layout
    reading = read_dataset(layout.root)
    write_manifests(reading, tmp_path / "m")
    back = {c.clip_id: c for c in load_clips(tmp_path / "m", au_only=True)}
    for clip in reading.all_clips():
        assert back[clip.clip_id] == clip
        if clip.va_labels is not None:
            np.testing.assert_array_equal(back[clip.clip_id].va_labels, clip.va_labels)
    # A record without VA has no VA field: manifests of datasets without VA files are as before.
    record = json.loads((tmp_path / "m" / "train.jsonl").read_text().splitlines()[1])
    assert record["clip_id"] == "vid2_left" and "va_labels" not in record
    plain = read_dataset(clean_layout.root)
    assert all(c.va_labels is None for c in plain.all_clips())


def test_length_repairs_and_bad_file_one_line(va_layout):
    layout, written = va_layout
    write_va(layout, "vid1", "train", written["vid1"][:15])  # 5 short
    write_va(layout, "vid3", "val", np.r_[written["vid3"], [[0.1, 0.1]] * 3])  # 3 long
    bad = va_dir(layout, "Train_Set") / "vid5.txt"
    bad.write_text("valence,arousal\n0.1,0.2\n0.3,7\n", encoding="utf-8")
    reading = read_dataset(layout.root)
    clips = {c.clip_id: c for c in reading.all_clips()}
    assert (clips["vid1"].va_labels[15:] == -5).all() and len(clips["vid1"].va_labels) == 20
    assert len(clips["vid3"].va_labels) == 16
    kinds = {i.kind for i in reading.repairs}
    assert {"va_labels_padded", "va_labels_truncated"} <= kinds
    issue = only_issue(reading.rejections, "vid5")
    assert issue.kind == "bad_va_annotation" and "line 3" in issue.reason
    assert clips["vid5"].va_labels is None and clips["vid5"].au_labels is not None  # kept


def test_counts_and_manifest_cli_show_va(va_layout, tmp_path, capsys):
    from cli.main import main
    layout, written = va_layout
    counts = read_dataset(layout.root).counts()
    assert counts["train"]["va"] == {"clips": 2, "valid": 36, "invalid": 2}
    assert counts["val"]["va"] == {"clips": 2, "valid": 24, "invalid": 2}
    main(["manifest", str(layout.root), "--out", str(tmp_path / "m")])
    assert "VA valid" in capsys.readouterr().out


def test_leakage_guard_covers_va_both_ways(va_layout, tmp_path, capsys):
    """VA has splits of its own: a VA validation clip in the expression (vid2_right) or AU (vid3)
    training split leaves the VA validation score, an AU validation clip in VA's training split
    (vid6) leaves the AU one; --leakage-guard off lists them and keeps them."""
    from cli.main import main
    layout, written = va_layout
    write_va(layout, "vid2_right", "val", rows_for(24, 4))
    write_va(layout, "vid6", "train", rows_for(12, 5))
    reading = read_dataset(layout.root)
    leakage = reading.leakage
    assert leakage["va_val_in_expr_train"] == ["vid2_right"]
    assert leakage["va_val_in_au_train"] == ["vid3"]
    assert leakage["au_val_in_va_train"] == ["vid6"] and leakage["expr_val_in_va_train"] == []
    assert leakage["excluded_clips"] == {"au_val": 2, "expr_val": 1, "va_val": 2}
    assert leakage["excluded_frames"]["va_val"] == int(
        (written["vid3"] != -5).all(axis=1).sum()) + 23  # vid2_right: 24 rows, one of -5
    clips = {c.clip_id: c for c in reading.all_clips()}
    assert clips["vid2_right"].exclude_from == ("va_val",)
    assert clips["vid3"].exclude_from == ("expr_val", "va_val")
    assert clips["vid6"].exclude_from == ("au_val",)
    assert not clips["vid3"].scored_in("va") and clips["vid7"].scored_in("va")
    assert (clips["vid3"].scoring_labels("va") == -5).all()
    off = read_dataset(layout.root, leakage_guard="off")
    assert off.leakage["va_val_in_au_train"] == ["vid3"]
    assert off.leakage["excluded_clips"] == {"au_val": 0, "expr_val": 0, "va_val": 0}
    assert all(c.exclude_from == () for c in off.all_clips())
    assert main(["manifest", str(layout.root), "--out", str(tmp_path / "m")]) == 0
    out = capsys.readouterr().out
    assert ("leakage guard: 1 VA validation clip(s) in the AU training split, left out of the VA"
            " validation scores") in out and "vid3" in out
