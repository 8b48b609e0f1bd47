"""RAF-DB (basic emotions) as published: ``EmoLabel/list_patition_label.txt`` (the spelling of
the release; ``list_partition_label.txt`` is read when only it exists) holds one
``train_00001.jpg 5`` line per image; the aligned 100x100 faces are
``Image/aligned/train_00001_aligned.jpg``. ``train_*`` images are the training split, ``test_*``
the published test set (read as ``val``: the split a fine-tune never trains on).

RAF-DB codes: 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral. All
seven map; RAF-DB has no Other.
"""

from __future__ import annotations

from pathlib import Path

from pipeline.data.static.common import StaticImage, StaticReading, listed_lines, parse_int

LIST = Path("EmoLabel") / "list_patition_label.txt"
FIXED_SPELLING = Path("EmoLabel") / "list_partition_label.txt"  # some copies renamed it
ALIGNED = Path("Image") / "aligned"
# RAF-DB code -> (its name, the project's class)
CODES = {1: ("Surprise", 6), 2: ("Fear", 3), 3: ("Disgust", 2), 4: ("Happiness", 4),
         5: ("Sadness", 5), 6: ("Anger", 1), 7: ("Neutral", 0)}
SPLITS = {"train": "train", "test": "val"}


def read(root: Path) -> StaticReading:
    listing = root / LIST
    if not listing.exists() and (root / FIXED_SPELLING).exists():
        listing = root / FIXED_SPELLING
    reading = StaticReading("rafdb", str(root), [str(listing)])
    seen: set[str] = set()
    for n, fields in listed_lines(reading, listing):
        if len(fields) != 2:
            reading.reject(listing, n, "bad_line", f"want 'IMAGE LABEL', got {' '.join(fields)[:60]!r}")
            continue
        name, code = fields[0], parse_int(fields[1])
        prefix = name.split("_", 1)[0]
        if prefix not in SPLITS or not name.endswith(".jpg") or "/" in name or "\\" in name:
            reading.reject(listing, n, "bad_name", f"image name {name[:60]!r} is not "
                           "train_NNNNN.jpg or test_NNNN.jpg")
            continue
        if code not in CODES:
            reading.reject(listing, n, "bad_label", f"label {fields[1][:20]!r} is not 1..7")
            continue
        if name in seen:
            reading.reject(listing, n, "duplicate", f"{name} listed twice (the first is kept)")
            continue
        seen.add(name)
        path = root / ALIGNED / f"{name[:-4]}_aligned.jpg"
        reading.images.append(StaticImage(name, SPLITS[prefix], CODES[code][1], path=path))
    return reading
