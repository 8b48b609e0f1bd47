"""Shot cuts and face appearance from colour histograms: what keeps identities apart.

**Cuts.** Each frame's colour histogram (every 4th pixel, 8 levels per RGB channel: 512 bins,
normalised to sum 1) is compared with the previous frame's by the histogram distance
``d = 0.5 * sum |h_i - h_{i-1}|`` (0: same colours, 1: no colour in common). A frame starts a new
shot when ``d >= threshold`` (``FacesConfig.cut_threshold``, 0.35). Pans, zooms and a face
leaving the picture move a few percent of the mass (the repository's moving-face video: at most
0.11 between frames); a cut to another scene moves most of it (0.80 on the tests' cut). A head
and shoulders popping into an empty picture in one frame moves 0.44 and counts as a cut (the
moving-face video's frame 34): harmless, the face had left, so its track had ended anyway. A cross-fade
spread over many frames is not seen as a cut: the appearance rule below still splits its tracks
when the faces differ. This is the histogram rule of the classic shot-boundary literature
(Zhang, Kankanhalli and Smoliar 1993: pairwise histogram difference with a fixed threshold), not
PySceneDetect, which is not a dependency of this project.

**Appearance.** A face's signature is the same kind of histogram over the inner half of its box
(the face, little background). A detection continues a track only when its distance to the
track's signature (a running mean) is below ``FacesConfig.appearance_max`` (0.5): two people
who swap places between frames, or a new face where the last one was, start new tracks. It is a
colour signature, not an identity embedding: two people of similar skin, hair and lighting are
told apart by position and cuts only.
"""

from __future__ import annotations

import numpy as np

LEVELS = 8  # per RGB channel: 512 bins


def histogram(pixels: np.ndarray, step: int = 4) -> np.ndarray:
    """float32 [LEVELS**3]: the normalised colour histogram of uint8 RGB ``pixels`` [H, W, 3]
    (every ``step``-th pixel each way); all zeros for an empty region."""
    sample = np.asarray(pixels)[::step, ::step].reshape(-1, 3).astype(np.int64) * LEVELS // 256
    if not len(sample):
        return np.zeros(LEVELS ** 3, np.float32)
    codes = (sample[:, 0] * LEVELS + sample[:, 1]) * LEVELS + sample[:, 2]
    counts = np.bincount(codes, minlength=LEVELS ** 3).astype(np.float32)
    return counts / counts.sum()


def distance(a: np.ndarray, b: np.ndarray) -> float:
    """Half the L1 distance of two normalised histograms: in [0, 1]."""
    return float(0.5 * np.abs(a - b).sum())


def cuts(histograms: list[np.ndarray], threshold: float) -> list[int]:
    """Frames that start a new shot (never frame 0), by the rule of the module docstring."""
    return [i for i in range(1, len(histograms))
            if distance(histograms[i - 1], histograms[i]) >= threshold]


def face_signature(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The histogram of the inner half of a face box (clipped to the frame)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
    left, right = int(max(0, cx - hw)), int(min(w, cx + hw))
    top, bottom = int(max(0, cy - hh)), int(min(h, cy + hh))
    step = max(1, min(right - left, bottom - top) // 24)  # about 24x24 samples whatever the size
    return histogram(frame[top:bottom, left:right], step)
