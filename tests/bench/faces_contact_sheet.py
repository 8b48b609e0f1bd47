"""The contact sheet of docs/faces.md: ``fer-pipeline faces`` on the moving real face, drawn frame
by frame.

Top row: every 3rd frame with the known face box (blue), the detected box (green) and landmarks
(red), and the frame's number; bottom row: the crop written for it (grey where no file was
written). Prints per frame the faces expected (1 inside, 0 outside, ? partly out) and found.

    python tests/bench/faces_contact_sheet.py [OUT.png]   (default docs/faces_contact_sheet.png)
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from pipeline.data.faces.config import FacesConfig
from pipeline.data.faces.synthetic import moving_face
from pipeline.data.media import write_video
from stages.faces import run_faces

STEP, THUMB, CROP = 3, (128, 96), 96


def main(out: Path) -> None:
    video = moving_face(n_frames=40)
    with tempfile.TemporaryDirectory() as tmp:
        write_video(Path(tmp) / "hopper.mp4", video.frames, 10.0)
        run_faces([Path(tmp) / "hopper.mp4"], Path(tmp) / "out", FacesConfig())
        folder = Path(tmp) / "out" / "cropped_aligned" / "hopper"
        with np.load(Path(tmp) / "out" / "faces" / "hopper.npz") as q:
            face, box, landmarks = q["face"], q["box"], q["landmarks"]
        crops = {i: np.asarray(Image.open(folder / f"{i + 1:05d}.jpg").convert("RGB"))
                 for i in np.flatnonzero(face)}
    expected = np.where(video.inside(), "1", np.where(video.outside(), "0", "?"))
    print("frame expected found")
    for i in range(len(face)):
        print(f"{i + 1:5d} {expected[i]:>8} {int(face[i]):5d}")
    certain = expected != "?"
    agree = int((expected[certain] == face[certain].astype(int).astype(str)).sum())
    print(f"faces found as expected in {agree}/{int(certain.sum())} frames "
          f"({int((~certain).sum())} frames with the face partly out are not counted)")

    frames = list(range(0, len(face), STEP))
    sx, sy = THUMB[0] / video.frames.shape[2], THUMB[1] / video.frames.shape[1]
    sheet = Image.new("RGB", (len(frames) * THUMB[0], THUMB[1] + CROP + 14), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for column, i in enumerate(frames):
        x0 = column * THUMB[0]
        thumb = Image.fromarray(video.frames[i]).resize(THUMB, Image.Resampling.BILINEAR)
        pen = ImageDraw.Draw(thumb)
        pen.rectangle(tuple(video.boxes[i] * [sx, sy, sx, sy]), outline=(40, 80, 255))
        if face[i]:
            pen.rectangle(tuple(box[i] * [sx, sy, sx, sy]), outline=(0, 230, 0))
            for x, y in landmarks[i]:
                pen.ellipse((x * sx - 1.5, y * sy - 1.5, x * sx + 1.5, y * sy + 1.5), fill=(255, 0, 0))
        sheet.paste(thumb, (x0, 0))
        tile = (Image.fromarray(crops[i]).resize((CROP, CROP)) if i in crops
                else Image.new("RGB", (CROP, CROP), (200, 200, 200)))
        sheet.paste(tile, (x0 + (THUMB[0] - CROP) // 2, THUMB[1]))
        draw.text((x0 + 4, THUMB[1] + CROP + 1),
                  f"{i + 1}: expect {expected[i]}, found {int(face[i])}", fill=(0, 0, 0))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.quantize(256).save(out, optimize=True)  # palette PNG: small enough to commit
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/faces_contact_sheet.png"))
