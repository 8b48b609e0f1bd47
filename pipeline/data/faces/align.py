"""Five-point alignment: a similarity transform that puts a face's landmarks on the crop template.

The template is ArcFace's for 112x112 crops (insightface's ``arcface_dst``: eyes at (38.3, 51.7)
and (73.5, 51.5), nose tip at (56.0, 71.7), mouth corners at (41.5, 92.4) and (70.7, 92.2)).
Aff-Wild2's ``cropped_aligned`` faces are 112x112 too and, like ArcFace crops, show the face from
the brows to the chin with little background; their exact recipe is not published, so this is
a choice (``FacesConfig.size`` and ``scale`` change it). ``scale`` > 1 zooms out about the crop's
centre: at 1.2 the template's points move 1/1.2 of the way to the centre, so the crop shows 1.2x
more of the scene on each side (the multi-scale crops of arXiv 2603.12221).

The transform (rotation, one scale, translation; no shear, no reflection) is the least-squares
fit of Umeyama (1991) from the five landmarks to the template.

**Edges.** A face near the frame's edge, tilted or zoomed out, asks for pixels outside the frame.
``pad`` says what they are: ``"replicate"`` (the default: the frame's border pixels extended
outwards), ``"reflect"`` (the frame mirrored at its border) or ``"black"`` (zeros: what this
module did before, and what Aff-Wild2's released crops show). Replicate is the default because a
black wedge is a hard, high-contrast edge that a frozen backbone reads as content, at a place that
moves with the face's position in the frame and not with its expression; a mirror copies facial
parts (an eye, the mouth corner) into the corner and makes a second, fake one; replication only
smears the border colour. Faces whose crop lies wholly inside the frame are unaffected: their
crops are the same bytes in every mode.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float64)


def template(size: int = 112, scale: float = 1.0) -> np.ndarray:
    """float64 [5, 2]: where the landmarks land in a ``size`` x ``size`` crop at margin ``scale``."""
    if size < 8 or scale <= 0:
        raise ValueError(f"crop size {size} / scale {scale}: need size >= 8 and scale > 0")
    centre = size / 2.0
    return centre + (ARCFACE_112 * (size / 112.0) - centre) / scale


def similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """float64 [2, 3]: the similarity transform that maps ``source`` points closest to ``target``
    (least squares, Umeyama 1991), as ``target ~ M[:, :2] @ p + M[:, 2]``."""
    source, target = np.asarray(source, np.float64), np.asarray(target, np.float64)
    mu_s, mu_t = source.mean(0), target.mean(0)
    s, t = source - mu_s, target - mu_t
    covariance = t.T @ s / len(source)
    u, d, vt = np.linalg.svd(covariance)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection fits better: take the rotation
        sign[1, 1] = -1.0
    rotation = u @ sign @ vt
    variance = (s ** 2).sum() / len(source)
    factor = np.trace(np.diag(d) @ sign) / variance if variance > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = factor * rotation
    matrix[:, 2] = mu_t - matrix[:, :2] @ mu_s
    return matrix


PADS = ("replicate", "reflect", "black")


def warp(frame: np.ndarray, matrix: np.ndarray, size: int, pad: str = "black") -> np.ndarray:
    """uint8 ``[size, size, 3]``: ``frame`` moved by ``matrix`` (bilinear); outside the frame,
    ``pad`` (see the module docstring)."""
    inverse = np.linalg.inv(np.vstack([matrix, [0.0, 0.0, 1.0]]))[:2]
    if pad != "black":
        # Where the crop's pixels come from, in frame pixels (its corners, plus the bilinear
        # neighbour): outside the frame, pad it locally and move the transform with it.
        corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
        source = corners @ inverse[:, :2].T + inverse[:, 2]
        h, w = frame.shape[:2]
        x0, y0 = np.floor(source.min(0)).astype(int) - 2
        x1, y1 = np.ceil(source.max(0)).astype(int) + 2
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            if pad not in PADS:
                raise ValueError(f"pad {pad!r}: choose one of {', '.join(PADS)}")
            inner = frame[max(0, y0):min(h, y1), max(0, x0):min(w, x1)]
            if inner.size == 0:  # the crop is wholly outside the frame: nothing to extend
                return np.zeros((size, size, 3), np.uint8)
            widths = ((max(0, -y0), max(0, y1 - h)), (max(0, -x0), max(0, x1 - w)), (0, 0))
            frame = np.pad(inner, widths, mode="edge" if pad == "replicate" else "reflect")
            inverse = inverse.copy()
            inverse[:, 2] -= [x0, y0]  # the padded array starts at frame pixel (x0, y0)
    # PIL samples the input at inverse(output pixel centre); both use pixel centres at +0.5.
    shift = inverse[:, :2] @ [0.5, 0.5] + inverse[:, 2] - 0.5
    coefficients = (*inverse[0, :2], shift[0], *inverse[1, :2], shift[1])
    image = Image.fromarray(np.ascontiguousarray(frame)).transform(
        (size, size), Image.Transform.AFFINE, coefficients, resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0))
    return np.asarray(image)


def align(frame: np.ndarray, landmarks: np.ndarray, size: int = 112, scale: float = 1.0,
          pad: str = "black") -> tuple[np.ndarray, np.ndarray]:
    """(aligned crop uint8 [size, size, 3], the [2, 3] transform from frame to crop pixels)."""
    matrix = similarity(landmarks, template(size, scale))
    return warp(frame, matrix, size, pad), matrix
