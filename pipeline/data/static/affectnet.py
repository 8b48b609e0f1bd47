"""AffectNet as released (manually annotated part): ``Manually_Annotated_file_lists/training.csv``
and ``validation.csv`` with the header ``subDirectory_filePath,face_x,face_y,face_width,
face_height,facial_landmarks,expression,valence,arousal``; the image is
``Manually_Annotated_Images/<subDirectory_filePath>`` and the face is the box ``face_x, face_y``
(left, top), ``face_width`` x ``face_height`` pixels. training.csv is the training split,
validation.csv ``val`` (the published test set is not released).

AffectNet codes: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger map;
7 Contempt, 8 None, 9 Uncertain and 10 Non-Face do not (counted per class in the report, never
trained on): Contempt is no ABAW class, and None/Uncertain/Non-Face are not an annotation of an
expression that Aff-Wild2's Other would name.
"""

from __future__ import annotations

import csv
from pathlib import Path

from pipeline.data.static.common import (StaticImage, StaticReading, csv_rows, parse_int,
                                         relative_image)

LISTS = Path("Manually_Annotated_file_lists")
IMAGES = Path("Manually_Annotated_Images")
FILES = {"train": "training.csv", "val": "validation.csv"}
CODES = {0: ("Neutral", 0), 1: ("Happy", 4), 2: ("Sad", 5), 3: ("Surprise", 6), 4: ("Fear", 3),
         5: ("Disgust", 2), 6: ("Anger", 1), 7: ("Contempt", None), 8: ("None", None),
         9: ("Uncertain", None), 10: ("Non-Face", None)}
NEEDED = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression")


def read(root: Path) -> StaticReading:
    reading = StaticReading("affectnet", str(root), [str(root / LISTS / f) for f in FILES.values()])
    for split, name in FILES.items():
        _read_list(root, root / LISTS / name, split, reading)
    return reading


def _read_list(root: Path, path: Path, split: str, reading: StaticReading) -> None:
    try:
        f = path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        reading.reject(path, None, "unreadable_list", f"cannot read ({e.strerror})")
        return
    seen: set[str] = set()
    with f:
        rows = csv.reader(f)
        try:
            header = [h.strip() for h in next(rows, [])]
        except (csv.Error, UnicodeDecodeError) as e:
            reading.reject(path, 1, "bad_header", f"unreadable header ({e})")
            return
        missing = [c for c in NEEDED if c not in header]
        if missing:
            reading.reject(path, 1, "bad_header", f"no column {', '.join(missing)}")
            return
        at = {c: header.index(c) for c in NEEDED}
        for line, row in csv_rows(reading, path, rows, len(header)):
            _row(root, path, line, split, {c: row[i].strip() for c, i in at.items()}, seen, reading)


def _row(root: Path, path: Path, line: int, split: str, row: dict, seen: set[str],
         reading: StaticReading) -> None:
    name = row["subDirectory_filePath"]
    image = relative_image(root / IMAGES, name)
    code = parse_int(row["expression"])
    box = [parse_int(row[c]) for c in ("face_x", "face_y", "face_width", "face_height")]
    if image is None:
        reading.reject(path, line, "bad_name", f"image path {name[:60]!r} is not a relative path "
                       "inside the dataset")
    elif code not in CODES:
        reading.reject(path, line, "bad_label",
                       f"expression {row['expression'][:20]!r} is not 0..10")
    elif any(v is None for v in box) or box[0] < 0 or box[1] < 0 or box[2] <= 0 or box[3] <= 0:
        reading.reject(path, line, "bad_box", "face_x/face_y/face_width/face_height are not "
                       "whole numbers with x, y >= 0 and a positive size")
    elif name in seen:
        reading.reject(path, line, "duplicate", f"{name} listed twice (the first is kept)")
    else:
        seen.add(name)
        source, label = CODES[code]
        if label is None:
            reading.unmapped[(split, source)] += 1
            return
        x, y, w, h = box
        reading.images.append(StaticImage(name, split, label, path=image, box=(x, y, x + w, y + h)))
