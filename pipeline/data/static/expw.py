"""ExpW (Expression in-the-Wild) as published: ``label/label.lst`` holds one face per line,
``image_name face_id top left right bottom confidence expression``; the image is
``image/origin/<image_name>`` and the face the box ``left..right`` x ``top..bottom``. ExpW has
no published split: every face is ``train`` (the fine-tune's own dev slice selects the epoch).

ExpW codes: 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral. All seven map; ExpW
has no Other.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.static.common import (StaticImage, StaticReading, listed_lines, parse_int,
                                         relative_image)

LIST = Path("label") / "label.lst"
IMAGES = Path("image") / "origin"
CODES = {0: ("angry", 1), 1: ("disgust", 2), 2: ("fear", 3), 3: ("happy", 4), 4: ("sad", 5),
         5: ("surprise", 6), 6: ("neutral", 0)}


def read(root: Path) -> StaticReading:
    listing = root / LIST
    reading = StaticReading("expw", str(root), [str(listing)])
    seen: set[str] = set()
    for n, fields in listed_lines(reading, listing):
        if len(fields) != 8:
            reading.reject(listing, n, "bad_line", f"{len(fields)} fields, want 8 (image face_id "
                           "top left right bottom confidence expression)")
            continue
        name = fields[0]
        image = relative_image(root / IMAGES, name)
        face_id, code = parse_int(fields[1]), parse_int(fields[7])
        top, left, right, bottom = (parse_int(v) for v in fields[2:6])
        if image is None:
            reading.reject(listing, n, "bad_name", f"image name {name[:60]!r} is not a relative "
                           "path inside the dataset")
        elif code not in CODES:
            reading.reject(listing, n, "bad_label", f"expression {fields[7][:20]!r} is not 0..6")
        elif face_id is None or None in (top, left, right, bottom) or min(top, left) < 0 \
                or right <= left or bottom <= top:
            reading.reject(listing, n, "bad_box", "face id or box is not whole numbers with "
                           "0 <= left < right and 0 <= top < bottom")
        elif f"{name}#{face_id}" in seen:
            reading.reject(listing, n, "duplicate", f"{name} face {face_id} listed twice "
                           "(the first is kept)")
        else:
            seen.add(f"{name}#{face_id}")
            reading.images.append(StaticImage(f"{name}#{face_id}", "train", CODES[code][1],
                                              path=image, box=(left, top, right, bottom)))
    return reading
