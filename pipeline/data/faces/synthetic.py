"""Videos with a real face at known places, for tests, benchmarks and the README's contact sheet.

The face is matplotlib's sample photograph of Grace Hopper (``grace_hopper.jpg``, shipped inside
matplotlib, so nothing is downloaded). Its ground truth was read by eye off the photo (512x600):
the face box (170, 120)-(350, 335) (brows' top to chin, ear to ear) and the eye centres (220, 190)
and (308, 187). A part of the photo (head and shoulders) is pasted onto a noisy background along a
path of key frames (position of the face centre and zoom, linear in between): it pans, zooms,
leaves the picture and comes back, so that the face's box is known in every frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

PHOTO_BOX = np.array([170.0, 120.0, 350.0, 335.0])  # face box in the photo, by eye
PHOTO_EYES = np.array([[220.0, 190.0], [308.0, 187.0]])
PATCH = (100, 40, 420, 420)  # the part of the photo pasted: head, cap and shoulders
# (frame, face centre x, face centre y, zoom) as fractions of the frame's width/height; between
# key frames everything moves linearly. Pan right, zoom in, leave to the right, come back.
PATH = ((0.00, 0.28, 0.50, 0.45), (0.30, 0.70, 0.50, 0.45), (0.48, 0.50, 0.55, 0.75),
        (0.58, 0.60, 0.50, 0.50), (0.80, 1.60, 0.50, 0.50), (0.86, 1.60, 0.50, 0.50),
        (0.87, 0.35, 0.45, 0.55), (1.00, 0.45, 0.50, 0.60))


def photo() -> Image.Image:
    import matplotlib.cbook

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")) as image:
        return image.convert("RGB")


@dataclass
class FaceVideo:
    frames: np.ndarray  # uint8 [T, H, W, 3]
    boxes: np.ndarray  # float64 [T, 4]: the face box in frame pixels (may lie outside the frame)
    eyes: np.ndarray  # float64 [T, 2, 2]: left and right eye centres (image left first)

    def inside(self) -> np.ndarray:
        """bool [T]: the whole face box is in the frame."""
        h, w = self.frames.shape[1:3]
        b = self.boxes
        return (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= w) & (b[:, 3] <= h)

    def outside(self) -> np.ndarray:
        """bool [T]: no part of the face box is in the frame."""
        h, w = self.frames.shape[1:3]
        b = self.boxes
        return (b[:, 2] <= 0) | (b[:, 0] >= w) | (b[:, 3] <= 0) | (b[:, 1] >= h)


def moving_face(n_frames: int = 40, width: int = 320, height: int = 240, seed: int = 0,
                path: tuple = PATH, mirror: bool = False) -> FaceVideo:
    """The face along ``path`` (see the module docstring); ``mirror`` flips the photo."""
    rng = np.random.default_rng(seed)
    source = photo().crop(PATCH)
    box = PHOTO_BOX - [PATCH[0], PATCH[1]] * 2
    eyes = PHOTO_EYES - [PATCH[0], PATCH[1]]
    if mirror:
        source = source.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        box = np.array([source.width - box[2], box[1], source.width - box[0], box[3]])
        eyes = np.array([[source.width - eyes[1, 0], eyes[1, 1]], [source.width - eyes[0, 0], eyes[0, 1]]])
    keys = np.array(path, dtype=np.float64)
    t = np.linspace(0.0, 1.0, n_frames)
    cx, cy, zoom = (np.interp(t, keys[:, 0], keys[:, k]) for k in (1, 2, 3))
    base = rng.normal(110.0, 25.0, (height, width, 3)).clip(0, 255).astype(np.uint8)
    frames, boxes, all_eyes = [], [], []
    face_centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    for i in range(n_frames):
        size = (max(1, round(source.width * zoom[i])), max(1, round(source.height * zoom[i])))
        scale = np.array([size[0] / source.width, size[1] / source.height])
        patch = source.resize(size, Image.Resampling.BILINEAR)
        # integer paste offset that puts the face centre at (cx, cy) of the frame
        offset = np.round([cx[i] * width, cy[i] * height] - face_centre * scale).astype(int)
        canvas = Image.fromarray(base)
        canvas.paste(patch, (int(offset[0]), int(offset[1])))
        frames.append(np.asarray(canvas))
        boxes.append(np.r_[box[:2] * scale + offset, box[2:] * scale + offset])
        all_eyes.append(eyes * scale + offset)
    return FaceVideo(np.stack(frames), np.stack(boxes), np.stack(all_eyes))


def two_faces(n_frames: int = 24, width: int = 320, height: int = 240, seed: int = 0) -> FaceVideo:
    """Two people side by side (the photo and its mirror image), each drifting a little; ``boxes``
    and ``eyes`` are those of the left person, the right one's are in ``right``."""
    left_path = ((0.0, 0.25, 0.5, 0.30), (1.0, 0.30, 0.45, 0.33))
    right_path = ((0.0, 0.75, 0.5, 0.33), (1.0, 0.70, 0.55, 0.30))
    left = moving_face(n_frames, width // 2, height, seed, tuple((t, 2 * x, y, z) for t, x, y, z in left_path))
    right = moving_face(n_frames, width - width // 2, height, seed + 1,
                        tuple((t, 2 * x - 1, y, z) for t, x, y, z in right_path), mirror=True)
    shift = np.array([width // 2, 0, width // 2, 0], dtype=np.float64)
    video = FaceVideo(np.concatenate([left.frames, right.frames], axis=2), left.boxes, left.eyes)
    video.right_boxes = right.boxes + shift  # type: ignore[attr-defined]
    return video


def _variant(kind: str) -> tuple[Image.Image, np.ndarray]:
    """The photo's head-and-shoulders patch as ``kind`` ("colour", "mirror", "grey" or
    "grey-mirror") and its face box in patch pixels."""
    source = photo().crop(PATCH)
    box = PHOTO_BOX - [PATCH[0], PATCH[1]] * 2
    if "grey" in kind:  # the same photograph in black and white: another colour signature
        source = source.convert("L").convert("RGB")
    if "mirror" in kind:
        source = source.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        box = np.array([source.width - box[2], box[1], source.width - box[0], box[3]])
    return source, box


def group(n_frames: int = 12, width: int = 480, height: int = 200, seed: int = 0,
          kinds: tuple[str, ...] = ("colour", "grey-mirror", "mirror", "grey")) -> FaceVideo:
    """A group photo: the photo once per ``kinds`` entry, side by side at a third of its size,
    each drifting a pixel a frame (a still, filmed). ``boxes`` is ``[T, people, 4]``."""
    rng = np.random.default_rng(seed)
    base = rng.normal(110.0, 25.0, (height, width, 3)).clip(0, 255).astype(np.uint8)
    cell = width // len(kinds)
    frames, boxes = [], []
    for i in range(n_frames):
        canvas = Image.fromarray(base)
        row = []
        for p, kind in enumerate(kinds):
            source, box = _variant(kind)
            zoom = min(0.9 * cell / source.width, 0.9 * height / source.height)
            size = (round(source.width * zoom), round(source.height * zoom))
            offset = np.array([p * cell + (cell - size[0]) // 2 + (i if p % 2 else -i) // 3,
                               (height - size[1]) // 2])
            canvas.paste(source.resize(size, Image.Resampling.BILINEAR), (int(offset[0]), int(offset[1])))
            row.append(np.r_[box[:2] * zoom + offset, box[2:] * zoom + offset])
        frames.append(np.asarray(canvas))
        boxes.append(np.stack(row))
    return FaceVideo(np.stack(frames), np.stack(boxes), np.zeros((n_frames, 2, 2)))


def shot_cut(n_each: int = 12, width: int = 320, height: int = 240) -> tuple[FaceVideo, int]:
    """Two shots: the photo in colour on a grey background, then (cut) the photo in black and
    white, mirrored, elsewhere on a dark blue one; returns the video and the first frame of the
    second shot. ``boxes`` holds each frame's one face."""
    first = moving_face(n_each, width, height, seed=0,
                        path=((0.0, 0.35, 0.5, 0.5), (1.0, 0.45, 0.5, 0.55)))
    source, box = _variant("grey-mirror")
    rng = np.random.default_rng(1)
    base = (rng.normal(0.0, 12.0, (height, width, 3)) + [30, 40, 120]).clip(0, 255).astype(np.uint8)
    frames, boxes = [], []
    for i in range(n_each):
        zoom = 0.5 + 0.01 * i
        size = (round(source.width * zoom), round(source.height * zoom))
        offset = np.array([width - size[0] - 10 - i, (height - size[1]) // 2])
        canvas = Image.fromarray(base)
        canvas.paste(source.resize(size, Image.Resampling.BILINEAR), (int(offset[0]), int(offset[1])))
        frames.append(np.asarray(canvas))
        boxes.append(np.r_[box[:2] * zoom + offset, box[2:] * zoom + offset])
    video = FaceVideo(np.concatenate([first.frames, np.stack(frames)]),
                      np.concatenate([first.boxes, np.stack(boxes)]),
                      np.zeros((2 * n_each, 2, 2)))
    return video, n_each
