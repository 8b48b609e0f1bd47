"""A validation split built by hand for the stage-three tests (members' probabilities, labels, clips)."""

import numpy as np

from pipeline.scoring.frames import SplitData


def make_split(probs, labels, lengths, groups=None, face=None) -> SplitData:
    """Clips ``c0, c1, ...`` of ``lengths`` frames, each its own video ``v<i>`` unless ``groups``
    names them; ``probs`` one [frames, 8] array per member; every frame with a face unless ``face``
    says otherwise."""
    n_clips = len(lengths)
    return SplitData(
        clip_ids=tuple(f"c{i}" for i in range(n_clips)),
        groups=tuple(groups or (f"v{i}" for i in range(n_clips))),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        probs=np.stack(probs).astype(np.float32),
        labels=np.asarray(labels, dtype=np.int8),
        face=np.ones(sum(lengths), dtype=bool) if face is None else face,
    )
