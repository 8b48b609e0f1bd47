"""FER2013 as published on Kaggle: ``fer2013.csv`` with the header ``emotion,pixels,Usage``
(columns found by name, in any order: the ICML-workshop copy ``icml_face_data.csv`` has
``emotion, Usage, pixels``), one 48x48 grey face per row as 2304 space-separated integers
0..255. ``Usage`` Training is the training split, PublicTest ``val``, PrivateTest ``test``.

FER2013 codes: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral. All seven map;
FER2013 has no Other.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from pipeline.data.static.common import StaticImage, StaticReading, csv_rows, parse_int

CSV = "fer2013.csv"
SIDE = 48
CODES = {0: ("Angry", 1), 1: ("Disgust", 2), 2: ("Fear", 3), 3: ("Happy", 4), 4: ("Sad", 5),
         5: ("Surprise", 6), 6: ("Neutral", 0)}
USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
COLUMNS = ("emotion", "pixels", "Usage")


def pixels(text: str) -> np.ndarray | None:
    """The 48x48 uint8 face of a ``pixels`` cell, None when it is not 2304 integers 0..255."""
    values = text.split()
    if len(values) != SIDE * SIDE or not all(v.isdigit() for v in values):
        return None
    array = np.array([int(v) for v in values], dtype=np.int64)
    if array.max() > 255:
        return None
    return array.astype(np.uint8).reshape(SIDE, SIDE)


def read(root: Path) -> StaticReading:
    path = root / CSV if root.is_dir() else root  # the folder, or the CSV itself
    reading = StaticReading("fer2013", str(root), [str(path)])
    try:
        f = path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        reading.reject(path, None, "unreadable_csv", f"cannot read ({e.strerror})")
        return reading
    with f:
        rows = csv.reader(f)
        try:
            header = next(rows, None)
        except (csv.Error, UnicodeDecodeError) as e:
            reading.reject(path, 1, "bad_header", f"unreadable header ({e})")
            return reading
        names = [h.strip() for h in header or []]
        if sorted(names) != sorted(COLUMNS):
            reading.reject(path, 1, "bad_header", f"header {','.join(names)[:60]!r} is not "
                           f"{','.join(COLUMNS)}")
            return reading
        at = [names.index(c) for c in COLUMNS]
        for line, row in csv_rows(reading, path, rows, len(COLUMNS)):
            row = [row[i] for i in at]
            code, face, usage = parse_int(row[0]), pixels(row[1]), row[2].strip()
            if code not in CODES:
                reading.reject(path, line, "bad_label", f"emotion {row[0][:20]!r} is not 0..6")
            elif face is None:
                reading.reject(path, line, "bad_pixels", "pixels are not 2304 integers 0..255")
            elif usage not in USAGE:
                reading.reject(path, line, "bad_usage", f"Usage {usage[:30]!r} is not one of "
                               f"{', '.join(USAGE)}")
            else:
                reading.images.append(StaticImage(f"row{line:05d}", USAGE[usage], CODES[code][1],
                                                  pixels=face))
    return reading
