"""ABAW submission files (expression and AU): the writer's output passes the checker, which
catches every breakage."""

import numpy as np
import pytest

from pipeline.data.manifest import Clip
from pipeline.errors import PipelineError
from pipeline.scoring.submission import (
    AU_SUBMISSION_HEADER,
    SUBMISSION_HEADER,
    check_au_submission,
    check_submission,
    image_location,
    write_au_submission,
    write_submission,
)


def _clips():
    return [Clip(f"video{i}" + suffix, "test", f"video{i}", n, 30.0, None, None, None, None)
            for i, (suffix, n) in enumerate([("", 5), ("_left", 3), ("_right", 4)])]


@pytest.fixture()
def written(tmp_path):
    clips = _clips()
    rng = np.random.default_rng(0)
    labels = {c.clip_id: rng.integers(0, 8, c.n_frames) for c in clips}
    path = tmp_path / "submission.txt"
    rows = write_submission(path, ((c, labels[c.clip_id]) for c in clips))
    return path, clips, labels, rows


def test_round_trip(written):
    path, clips, labels, rows = written
    assert rows == 12
    assert check_submission(path, clips) == []
    lines = path.read_text().splitlines()
    assert lines[0] == SUBMISSION_HEADER
    assert lines[0] == "image_location,Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other"
    assert lines[1] == f"video0/00001.jpg,{labels['video0'][0]}"
    parsed = {}
    for line in lines[1:]:
        location, label = line.split(",")
        clip, frame = location.split("/")
        parsed.setdefault(clip, []).append(int(label))
        assert frame == f"{len(parsed[clip]):05d}.jpg"
    assert {k: list(v) for k, v in labels.items()} == parsed


def _edit(path, edit):
    lines = path.read_text().splitlines()
    edit(lines)
    path.write_text("\n".join(lines) + "\n")


def _swap(lines, i, j):
    lines[i], lines[j] = lines[j], lines[i]


def _set(i, text):
    return lambda lines: lines.__setitem__(i, text)


# variant -> (edit of the file's lines (0 = header), fragments the problems must start with)
BROKEN = {
    "bad header": (_set(0, "image,label"), ["line 1: header"]),
    "no header": (lambda ls: ls.pop(0),
                  ["line 1: header", "clip video0: 1 of 5 frames missing"]),
    "unknown clip": (lambda ls: ls.append("stranger/00001.jpg,3"), ["line 14: unknown clip"]),
    "missing frames": (lambda ls: ls.pop(3),
                       ["clip video0: 1 of 5 frames missing (first video0/00003.jpg)"]),
    "missing clip": (lambda ls: ls.__delitem__(slice(6, 9)), ["clip video1_left: no rows"]),
    "duplicate row": (lambda ls: ls.insert(3, ls[2]),
                      ["line 4: duplicate row for video0/00002.jpg (first on line 3)"]),
    "label out of range": (_set(2, "video0/00002.jpg,8"), ["line 3: label 8 is not a class"]),
    "negative label": (_set(2, "video0/00002.jpg,-1"), ["line 3: label -1 is not a class"]),
    "non-integer label": (_set(2, "video0/00002.jpg,2.0"),
                          ["line 3: label '2.0' is not an integer"]),
    "wrong column count": (_set(2, "video0/00002.jpg,1,0"), ["line 3: 3 columns, want 2"]),
    "order": (lambda ls: _swap(ls, 2, 3), ["line 4: video0/00002.jpg comes after frame 00003"]),
    "frame beyond the clip": (lambda ls: ls.append("video0/00006.jpg,0"),
                              ["line 14: video0/00006.jpg: frame 6 is outside"]),
    "malformed location": (_set(2, "video0/2.jpg,1"), ["line 3: image location 'video0/2.jpg'"]),
    "empty line": (lambda ls: ls.insert(2, ""), ["line 3: empty line"]),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_checker_catches_each_broken_variant(written, name):
    path, clips, _, _ = written
    edit, expected = BROKEN[name]
    _edit(path, edit)
    problems = check_submission(path, clips)
    assert problems, name
    for fragment in expected:
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)


def test_an_unknown_clip_is_reported_once_with_its_row_count(written):
    path, clips, _, _ = written
    _edit(path, lambda ls: ls.extend(f"stranger/{i:05d}.jpg,0" for i in range(1, 4)))
    assert check_submission(path, clips) == ["line 14: unknown clip 'stranger' (3 row(s); not a"
                                             " clip of the given manifest split)"]


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert check_submission(empty, _clips())[0].endswith("empty file (want the header"
                                                         f" {SUBMISSION_HEADER})")
    with pytest.raises(PipelineError, match="no such submission file"):
        check_submission(tmp_path / "absent.txt", _clips())


def test_windows_line_endings_are_accepted(written):
    path, clips, _, _ = written
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert check_submission(path, clips) == []


@pytest.mark.parametrize("labels, message", [
    ([0, 0, 0, 0], "labels for 5 frames"),
    ([0, 0, 0, 0, 8], "outside"),
    ([0, 0, 0, 0, -1], "outside"),
    ([0.0, 1.0, 0.0, 0.0, 0.0], "want integers"),
])
def test_writer_rejects_bad_labels_and_leaves_no_file(tmp_path, labels, message):
    path = tmp_path / "submission.txt"
    clips = _clips()
    rows = [(clips[1], np.zeros(3, int)), (clips[0], np.array(labels))]
    with pytest.raises(PipelineError, match=message):
        write_submission(path, rows)
    assert not list(tmp_path.iterdir())  # neither the file nor its temporary


def test_image_location_is_one_based_and_five_digits():
    assert image_location("v", 0) == "v/00001.jpg"
    assert image_location("v", 12344) == "v/12345.jpg"


@pytest.fixture()
def written_au(tmp_path):
    clips = _clips()
    rng = np.random.default_rng(1)
    decisions = {c.clip_id: rng.integers(0, 2, (c.n_frames, 12)) for c in clips}
    path = tmp_path / "au_submission.txt"
    rows = write_au_submission(path, ((c, decisions[c.clip_id]) for c in clips))
    return path, clips, decisions, rows


def test_au_round_trip(written_au):
    path, clips, decisions, rows = written_au
    assert rows == 12 and check_au_submission(path, clips) == []
    lines = path.read_text().splitlines()
    assert lines[0] == "image_location,AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26"
    assert lines[0] == AU_SUBMISSION_HEADER
    parsed = {}
    for line in lines[1:]:
        location, *values = line.split(",")
        clip, frame = location.split("/")
        parsed.setdefault(clip, []).append([int(v) for v in values])
        assert frame == f"{len(parsed[clip]):05d}.jpg"
    assert {k: v.tolist() for k, v in decisions.items()} == parsed
    # An expression file is not an AU file, and the reverse.
    assert check_submission(path, clips)[0].startswith("line 1: header")


AU_ROW = "video0/00002.jpg," + ",".join(["0"] * 12)

BROKEN_AU = {
    "expression header": (_set(0, SUBMISSION_HEADER), ["line 1: header"]),
    "expression row": (_set(2, "video0/00002.jpg,3"),
                       ["line 3: 2 columns, want 13 (image_location,AU1,AU2,"]),
    "eleven values": (_set(2, AU_ROW.rsplit(",", 1)[0]), ["line 3: 12 columns, want 13"]),
    "value out of range": (_set(2, AU_ROW[:-1] + "2"), ["line 3: AU26 value 2 is not 0 or 1"]),
    "minus one": (_set(2, AU_ROW.replace(",0", ",-1", 1)), ["line 3: AU1 value -1 is not 0 or 1"]),
    "probability": (_set(2, AU_ROW.replace(",0", ",0.7", 1)), ["line 3: AU1 '0.7' is not an"]),
    "missing frames": (lambda ls: ls.pop(3),
                       ["clip video0: 1 of 5 frames missing (first video0/00003.jpg)"]),
    "duplicate row": (lambda ls: ls.insert(3, ls[2]),
                      ["line 4: duplicate row for video0/00002.jpg (first on line 3)"]),
    "unknown clip": (lambda ls: ls.append("stranger/00001.jpg," + ",".join(["1"] * 12)),
                     ["line 14: unknown clip"]),
}


@pytest.mark.parametrize("name", sorted(BROKEN_AU))
def test_au_checker_catches_each_broken_variant(written_au, name):
    path, clips, _, _ = written_au
    edit, expected = BROKEN_AU[name]
    _edit(path, edit)
    problems = check_au_submission(path, clips)
    for fragment in expected:
        assert any(p.startswith(fragment) for p in problems), (fragment, problems)


@pytest.mark.parametrize("decisions, message", [
    (np.zeros((5, 11), int), r"\(5, 11\) labels for 5 frames"),
    (np.zeros(5, int), r"\(5,\) labels for 5 frames"),
    (np.full((5, 12), 2), "outside 0..1"),
    (np.full((5, 12), 0.7), "want integers"),
])
def test_au_writer_rejects_bad_decisions_and_leaves_no_file(tmp_path, decisions, message):
    with pytest.raises(PipelineError, match=message):
        write_au_submission(tmp_path / "s.txt", [(_clips()[0], decisions)])
    assert not list(tmp_path.iterdir())
