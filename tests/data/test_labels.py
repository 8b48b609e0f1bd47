"""The EXPR annotation parser against the published Aff-Wild2 file format, and what it refuses."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.data.labels import (
    AU_HEADER,
    AU_NAMES,
    CLASSES,
    HEADER,
    NUM_AUS,
    UNLABELED,
    AnnotationError,
    parse_annotation,
    parse_au_annotation,
    read_annotation,
    read_au_annotation,
)
from pipeline.data.label_runs import pack_au, unpack_au
from pipeline.errors import PipelineError

# A file exactly as the Aff-Wild2 release writes one: header, then line i+2 = frame i = image
# {i+1:05d}.jpg, -1 where the frame is not annotated.
PUBLISHED = b"Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n0\n0\n-1\n4\n7\n"


def test_published_format():
    labels = parse_annotation(PUBLISHED, "video1.txt")
    assert labels.dtype == np.int8
    assert labels.tolist() == [0, 0, -1, 4, 7]
    assert HEADER.encode() == PUBLISHED.split(b"\n")[0]
    assert CLASSES.index("Happiness") == 4 and UNLABELED == -1


@pytest.mark.parametrize(
    "data",
    [
        PUBLISHED.replace(b"\n", b"\r\n"),  # Windows line ends
        b"\xef\xbb\xbf" + PUBLISHED,  # UTF-8 byte-order mark
        # spaces in the header, no final newline
        b"  Neutral, Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other \n0\n0\n-1\n4\n7",
        PUBLISHED + b"\n\n  \n",  # blank lines at the end
        PUBLISHED.replace(b"\n4\n", b"\n 4 \n"),  # spaces around a label
    ],
    ids=["crlf", "bom", "spaced-header", "trailing-blank-lines", "padded-label"],
)
def test_tolerated_variants(data):
    assert parse_annotation(data).tolist() == [0, 0, -1, 4, 7]


HEAD = b"Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"0\n1\n", "line 1: missing header"),
        (b"valence,arousal\n0.1,0.2\n", "line 1: header 'valence,arousal' is not"),
        (b"Anger,Neutral,Disgust,Fear,Happiness,Sadness,Surprise,Other\n1\n", "line 1: header"),
        (b"neutral,anger,disgust,fear,happiness,sadness,surprise,other\n1\n", "line 1: header"),
        (b"\n" + HEAD + b"1\n", "line 1: header ''"),
        (b"", "empty file"),
        (b" \r\n\n", "empty file"),
        (HEAD, "header but no labels"),
        (HEAD + b"1\n\n2\n", "line 3: blank line"),
        (HEAD + b"1\n2\n8\n", "line 4: label 8 is outside -1..7"),
        (HEAD + b"-2\n", "line 2: label -2 is outside -1..7"),
        (HEAD + b"1\n4.0\n", "line 3: '4.0' is not an integer label"),
        (HEAD + b"+3\n", "line 2: '+3' is not an integer label"),
        (HEAD + b"1_0\n", "line 2: '1_0' is not an integer"),
        (HEAD + "٣\n".encode(), "line 2: '٣' is not an integer"),  # int() would take it
        (HEAD + b"1,0,0,0,0,0,0,0\n", "line 2: '1,0,0,0,0,0,0,0' is not an integer"),
        (HEAD + b"1\n2\n\xff3\n", "line 4: not UTF-8 text (byte 0xff"),
        ("Neutral,Anger,Disgust,Fear,Happiness,Sadness,Surprise,Other\n1\n".encode("utf-16"),
         "UTF-16"),
    ],
)
def test_rejected(data, reason):
    with pytest.raises(AnnotationError) as raised:
        parse_annotation(data, "ann/v1.txt")
    error = raised.value
    assert isinstance(error, PipelineError)
    assert reason in error.reason
    assert str(error) == f"ann/v1.txt: {error.reason}"
    assert "\n" not in str(error)


def test_long_lines_are_shortened_in_the_message():
    with pytest.raises(AnnotationError) as raised:
        parse_annotation(b"x" * 5000 + b"\n1\n")
    assert len(str(raised.value)) < 200


def test_read_annotation(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(PUBLISHED)
    assert read_annotation(path).tolist() == [0, 0, -1, 4, 7]
    with pytest.raises(AnnotationError, match=r"missing\.txt: unreadable"):
        read_annotation(tmp_path / "missing.txt")
    with pytest.raises(AnnotationError, match="unreadable"):
        read_annotation(tmp_path)  # a folder


@settings(max_examples=50, deadline=None)
@given(
    labels=st.lists(st.integers(-1, 7), min_size=1, max_size=200),
    newline=st.sampled_from(["\n", "\r\n"]),
    bom=st.booleans(),
)
def test_round_trip(labels, newline, bom):
    text = newline.join([HEADER, *map(str, labels)]) + newline
    data = (b"\xef\xbb\xbf" if bom else b"") + text.encode()
    assert parse_annotation(data).tolist() == labels


AU_HEAD = b"AU1,AU2,AU4,AU6,AU7,AU10,AU12,AU15,AU23,AU24,AU25,AU26\n"
AU_PUBLISHED = AU_HEAD + b"0,0,0,1,0,0,1,0,0,0,1,0\n-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1,-1\n" \
    + b"1,1,0,0,0,0,0,0,0,0,1,1\n"


def test_au_published_format():
    labels = parse_au_annotation(AU_PUBLISHED, "video1.txt")
    assert labels.dtype == np.int8 and labels.shape == (3, NUM_AUS)
    assert labels[0].tolist() == [0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    assert (labels[1] == -1).all()
    # AU6 and AU12 (a smile) are the 4th and 7th columns.
    assert [AU_NAMES[k] for k in np.flatnonzero(labels[0])] == ["AU6", "AU12", "AU25"]
    assert AU_HEADER.encode() + b"\n" == AU_HEAD


@pytest.mark.parametrize(
    "data",
    [
        AU_PUBLISHED.replace(b"\n", b"\r\n"),
        b"\xef\xbb\xbf" + AU_PUBLISHED,
        AU_PUBLISHED.replace(b"AU1,AU2,", b" AU1 , AU2,").replace(b"\n1,1,", b"\n 1 , 1,"),
        AU_PUBLISHED + b"\n \n",
    ],
    ids=["crlf", "bom", "spaces", "trailing-blank-lines"],
)
def test_au_tolerated_variants(data):
    np.testing.assert_array_equal(parse_au_annotation(data), parse_au_annotation(AU_PUBLISHED))


def test_read_au_annotation(tmp_path):
    (tmp_path / "v.txt").write_bytes(AU_PUBLISHED)
    assert read_au_annotation(tmp_path / "v.txt").shape == (3, NUM_AUS)
    with pytest.raises(AnnotationError, match=r"missing\.txt: unreadable"):
        read_au_annotation(tmp_path / "missing.txt")
    with pytest.raises(AnnotationError, match="line 1: header 'Neutral,Anger"):
        parse_au_annotation(PUBLISHED, "v.txt")  # an EXPR file where an AU file belongs


@settings(max_examples=50, deadline=None)
@given(rows=st.lists(st.one_of(st.just([-1] * NUM_AUS),
                               st.lists(st.integers(0, 1), min_size=NUM_AUS, max_size=NUM_AUS)),
                     min_size=1, max_size=100),
       newline=st.sampled_from(["\n", "\r\n"]))
def test_au_round_trip_and_packing(rows, newline):
    text = newline.join([AU_HEADER, *(",".join(map(str, r)) for r in rows)]) + newline
    labels = parse_au_annotation(text.encode())
    assert labels.tolist() == rows
    np.testing.assert_array_equal(unpack_au(pack_au(labels)), labels)
    codes = pack_au(labels)
    assert ((codes == -1) == (labels[:, 0] == -1)).all() and codes.max() < 2 ** NUM_AUS
