"""Static expression datasets (pipeline.data.static): each published layout read from a small
fixture, its classes mapped to the 8, its splits, every bad line one rejection naming the file
and line, unmapped classes counted; ``prepare`` writes manifests finetune reads."""

import json

import numpy as np
import pytest
from PIL import Image

from pipeline.data.labels import CLASSES
from pipeline.data.manifest import load_clips
from pipeline.data.static import parse_spec, read
from pipeline.data.static.prepare import prepare
from pipeline.errors import PipelineError
from tests.data import static_layouts


def by_name(reading):
    return {i.name: i for i in reading.images}


def kinds(reading):
    return sorted((r.kind, r.line) for r in reading.rejections)


def test_rafdb_maps_its_order_and_splits(tmp_path):
    reading = read("rafdb", static_layouts.rafdb(tmp_path / "raf"))
    images = by_name(reading)
    # RAF-DB's order: 1 Surprise 2 Fear 3 Disgust 4 Happiness 5 Sadness 6 Anger 7 Neutral
    assert [images[f"train_{2 * c - 1:05d}.jpg"].label for c in range(1, 8)] == [6, 3, 2, 4, 5, 1, 0]
    assert images["test_0007.jpg"].split == "val" and images["train_00001.jpg"].split == "train"
    assert images["train_00001.jpg"].path.name == "train_00001_aligned.jpg"
    assert len(reading.images) == 14 + 7 + 1  # the missing image is found by prepare
    # lines 22..25 of the list: bad label, short line, foreign name, duplicate
    assert kinds(reading) == [("bad_label", 22), ("bad_line", 23), ("bad_name", 24),
                              ("duplicate", 25)]
    assert all(r.file.endswith("list_patition_label.txt") for r in reading.rejections)
    assert not reading.unmapped


def test_fer2013_pixels_usage_and_bad_rows(tmp_path):
    reading = read("fer2013", static_layouts.fer2013(tmp_path / "fer"))
    assert len(reading.images) == 42
    splits = {s: sorted(i.label for i in reading.images if i.split == s) for s in ("train", "val", "test")}
    # FER2013's 0 Angry 1 Disgust 2 Fear 3 Happy 4 Sad 5 Surprise 6 Neutral; no Other
    assert splits["train"] == splits["val"] == splits["test"] == sorted([1, 2, 3, 4, 5, 6, 0] * 2)
    first = reading.images[0]
    assert first.pixels.shape == (48, 48) and first.pixels.dtype == np.uint8 and first.label == 1
    assert kinds(reading) == [("bad_label", 44), ("bad_pixels", 45), ("bad_usage", 46)]


def test_affectnet_boxes_and_what_does_not_map(tmp_path):
    reading = read("affectnet", static_layouts.affectnet(tmp_path / "an"))
    labels = {i.name.split("/")[1]: i.label for i in reading.images}
    # 0 Neutral 1 Happy 2 Sad 3 Surprise 4 Fear 5 Disgust 6 Anger
    assert labels == {"tra0.jpg": 0, "tra1.jpg": 4, "tra2.jpg": 5, "tra3.jpg": 6, "tra4.jpg": 3,
                      "tra5.jpg": 2, "tra6.jpg": 1, "val0.jpg": 0}
    assert dict(reading.unmapped) == {("train", "Contempt"): 1, ("train", "None"): 1,
                                      ("train", "Uncertain"): 1, ("train", "Non-Face"): 1,
                                      ("val", "Contempt"): 1}
    assert by_name(reading)["100/tra0.jpg"].box == (10, 5, 40, 45)
    assert kinds(reading) == [("bad_box", 13), ("bad_name", 14)]
    counts = reading.counts()
    assert counts["train"]["unmapped"]["Contempt"] == 1 and counts["val"]["images"] == 1


def test_affectnet_missing_column_is_one_line(tmp_path):
    root = static_layouts.affectnet(tmp_path / "an")
    path = root / "Manually_Annotated_file_lists" / "validation.csv"
    path.write_text("subDirectory_filePath,face_x\n")
    reading = read("affectnet", root)
    bad = [r for r in reading.rejections if r.file == str(path)]
    assert [(r.kind, r.line) for r in bad] == [("bad_header", 1)]
    assert "face_y" in bad[0].reason and "expression" in bad[0].reason


def test_expw_faces_and_bad_lines(tmp_path):
    reading = read("expw", static_layouts.expw(tmp_path / "expw"))
    images = by_name(reading)
    assert images["two.jpg#0"].box == (10, 5, 40, 45) and images["two.jpg#0"].label == 4
    assert images["two.jpg#1"].label == 0
    # 0 angry 1 disgust 2 fear 3 happy 4 sad 5 surprise 6 neutral
    assert [images[f"p{c}.jpg#0"].label for c in range(7)] == [1, 2, 3, 4, 5, 6, 0]
    assert {i.split for i in reading.images} == {"train"}
    assert kinds(reading) == [("bad_box", 11), ("bad_line", 10)]


def test_prepare_writes_manifests_of_the_crops(tmp_path):
    root = static_layouts.affectnet(tmp_path / "an")
    store = tmp_path / "store"
    prepared = prepare("affectnet", root, store)
    assert not prepared.already
    clips = load_clips(store, splits=("train", "val"))
    rows = (store / "images.tsv").read_text().splitlines()[1:]
    assert len(rows) == 8 == sum(c.n_frames for c in clips)
    for row in rows:
        clip_id, frame, name, label = row.split("\t")
        clip = next(c for c in clips if c.clip_id == clip_id)
        assert clip.labels[int(frame)] == int(label)
        with Image.open(clip.frame_path(int(frame))) as crop:
            assert crop.size == (30, 40) and crop.mode == "RGB"  # the face box, not the picture
    report = json.loads((store / "report.json").read_text())
    assert report["rejected"] == {"bad_box": 1, "bad_name": 1}
    assert report["counts"]["train"]["labelled"][CLASSES[4]] == 1
    # the same files again: nothing rewritten
    before = (store / "report.json").stat().st_mtime_ns
    assert prepare("affectnet", root, store).already
    assert (store / "report.json").stat().st_mtime_ns == before


def test_prepare_names_an_image_it_cannot_decode(tmp_path):
    root = static_layouts.rafdb(tmp_path / "raf")
    (root / "Image" / "aligned" / "train_00002_aligned.jpg").write_bytes(b"not a jpeg")
    prepared = prepare("rafdb", root, tmp_path / "store")
    bad = [r for r in prepared.reading.rejections if r.kind == "bad_image"]
    assert sorted(r.file.rsplit("/", 1)[1] for r in bad) == ["train_00002_aligned.jpg",
                                                              "train_09003_aligned.jpg"]
    assert prepared.report["frames"] == {"train": 13, "val": 7, "test": 0}
    assert prepared.report["counts"]["train"]["images"] == 13


def test_prepare_fer2013_writes_grey_faces_as_rgb(tmp_path):
    prepared = prepare("fer2013", static_layouts.fer2013(tmp_path / "fer"), tmp_path / "store")
    assert prepared.report["frames"] == {"train": 14, "val": 14, "test": 14}
    clip = load_clips(tmp_path / "store", splits=("test",))[0]
    with Image.open(clip.frame_path(0)) as face:
        assert face.size == (48, 48) and face.mode == "RGB"


def test_specs_are_checked(tmp_path):
    with pytest.raises(PipelineError, match="did you mean rafdb"):
        parse_spec(f"rafbd:{tmp_path}")
    with pytest.raises(PipelineError, match="no such dataset folder"):
        parse_spec(f"rafdb:{tmp_path / 'nope'}")
    with pytest.raises(PipelineError, match="NAME:ROOT"):
        parse_spec("rafdb")
    with pytest.raises(PipelineError, match="no usable rafdb image"):
        prepare("rafdb", tmp_path, tmp_path / "store")


def test_prepare_without_write_refuses_a_store_not_ready(tmp_path):
    root = static_layouts.expw(tmp_path / "expw")
    with pytest.raises(PipelineError, match="run `fer-pipeline static-data expw:"):
        prepare("expw", root, tmp_path / "store", write=False)
    assert not (tmp_path / "store").exists()
    prepare("expw", root, tmp_path / "store")
    assert prepare("expw", root, tmp_path / "store", write=False).already
    (root / "label" / "label.lst").write_text("p1.jpg 0 0 0 40 40 50.0 1\n")  # changed files
    with pytest.raises(PipelineError, match="not prepared from these expw files"):
        prepare("expw", root, tmp_path / "store", write=False)


def test_fer2013_columns_by_name(tmp_path):
    # the ICML-workshop copy orders its columns "emotion, Usage, pixels"
    root = tmp_path / "fer"
    root.mkdir()
    face = " ".join(["7"] * 2304)
    (root / "icml_face_data.csv").write_text(f"emotion, Usage, pixels\n3,PrivateTest,{face}\n"
                                             f"4,Training,{face}\nx,Training,{face}\n")
    reading = read("fer2013", root / "icml_face_data.csv")
    assert [(i.split, i.label) for i in reading.images] == [("test", 4), ("train", 5)]
    assert kinds(reading) == [("bad_label", 4)]
    (root / "fer2013.csv").write_text("emotion,pixels\n")
    assert kinds(read("fer2013", root)) == [("bad_header", 1)]


def test_rafdb_list_renamed_and_affectnet_csv_with_bom(tmp_path):
    root = static_layouts.rafdb(tmp_path / "raf", bad=False)
    (root / "EmoLabel" / "list_patition_label.txt").rename(
        root / "EmoLabel" / "list_partition_label.txt")
    assert len(read("rafdb", root).images) == 21
    an = static_layouts.affectnet(tmp_path / "an")
    path = an / "Manually_Annotated_file_lists" / "validation.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # saved by a spreadsheet
    assert [i.split for i in read("affectnet", an).images].count("val") == 1
