"""Small fixtures in the published layouts of RAF-DB, FER2013, AffectNet and ExpW (generated
images; FER2013 as a CSV of pixels), each with a few bad lines. Shared by the reader tests and the
two-stage fine-tune test."""

from pathlib import Path

import numpy as np
from PIL import Image


def picture(path: Path, size: tuple[int, int], seed: int) -> None:
    """A noisy colour image (width, height)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = rng.integers(0, 255, 3)
    array = np.clip(base + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    Image.fromarray(array).save(path)


def rafdb(root: Path, per_class: int = 2, bad: bool = True) -> Path:
    """``per_class`` training images of each of the 7 codes, one test image per code; with
    ``bad``: a bad label, a short line, a foreign name, a duplicate and a missing image."""
    lines, k = [], 0
    for code in range(1, 8):
        for i in range(per_class):
            k += 1
            lines.append(f"train_{k:05d}.jpg {code}")
            picture(root / "Image" / "aligned" / f"train_{k:05d}_aligned.jpg", (32, 32), k)
        lines.append(f"test_{code:04d}.jpg {code}")
        picture(root / "Image" / "aligned" / f"test_{code:04d}_aligned.jpg", (32, 32), 100 + code)
    if bad:
        lines += ["train_09001.jpg 9", "train_09002.jpg", "other_1.jpg 3", "train_00001.jpg 1",
                  "train_09003.jpg 2"]  # the last one's image is missing
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def fer2013(root: Path) -> Path:
    """Two rows per usage and code 0..6 (42 faces), then three bad rows."""
    rng = np.random.default_rng(0)
    rows = ["emotion,pixels,Usage"]
    for usage in ("Training", "PublicTest", "PrivateTest"):
        for code in range(7):
            for _ in range(2):
                rows.append(f"{code},{' '.join(map(str, rng.integers(0, 256, 48 * 48)))},{usage}")
    rows.append(f"7,{' '.join(['1'] * 2304)},Training")  # no code 7
    rows.append(f"3,{' '.join(['1'] * 2303)},Training")  # a pixel short
    rows.append(f"3,{' '.join(['1'] * 2304)},Validation")  # no such usage
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013.csv").write_text("\n".join(rows) + "\n")
    return root


AFFECTNET_HEADER = ("subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,"
                    "expression,valence,arousal")


def affectnet(root: Path) -> Path:
    """training.csv: one image per code 0..10 (a 60x50 picture, face box 10,5 30x40), a bad box, a
    path leaving the dataset; validation.csv: codes 0 and 7."""
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True, exist_ok=True)
    for name, codes in (("training.csv", range(11)), ("validation.csv", (0, 7))):
        rows = [AFFECTNET_HEADER]
        for code in codes:
            path = f"{100 + code}/{name[:3]}{code}.jpg"
            picture(root / "Manually_Annotated_Images" / path, (60, 50), code)
            rows.append(f'{path},10,5,30,40,"1.0;2.0;3.0",{code},0.1,-0.2')
        if name == "training.csv":
            rows.append('101/bad_box.jpg,10,5,0,40,"1;2",1,0,0')
            rows.append('../../etc/x.jpg,10,5,30,40,"1;2",1,0,0')
        (lists / name).write_text("\n".join(rows) + "\n")
    return root


def expw(root: Path) -> Path:
    """Two faces in one picture and one per code in others; a short line and an empty box."""
    picture(root / "image" / "origin" / "two.jpg", (80, 60), 1)
    lines = ["two.jpg 0 5 10 40 45 90.1 3", "two.jpg 1 10 45 75 50 80.0 6"]
    for code in range(7):
        picture(root / "image" / "origin" / f"p{code}.jpg", (40, 40), 10 + code)
        lines.append(f"p{code}.jpg 0 0 0 40 40 50.0 {code}")
    lines += ["p1.jpg 0 0 0 40", "p2.jpg 1 10 10 10 20 50.0 1"]
    (root / "label").mkdir(parents=True, exist_ok=True)
    (root / "label" / "label.lst").write_text("\n".join(lines) + "\n")
    return root
