"""The ABAW expression classes and the Aff-Wild2 EXPR annotation file format.

An annotation file is ``<video>.txt``: a header line naming the 8 classes in this order, then one
integer per frame (line i+1 is frame i, 0-based; image ``{i+1:05d}.jpg``), ``-1`` = not annotated.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "Neutral",
    "Anger",
    "Disgust",
    "Fear",
    "Happiness",
    "Sadness",
    "Surprise",
    "Other",
)
NUM_CLASSES = len(CLASSES)
UNLABELED = -1
HEADER = ",".join(CLASSES)
