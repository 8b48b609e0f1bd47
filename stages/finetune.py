"""Stage 0 (optional): fine-tune a face or audio backbone; the weights folder feeds stage one.

Inputs: the manifest directory (its training split only). Output: ``OUT/`` (``model.safetensors``
and ``finetune.json``, loaded by ``extract --weights NAME=OUT``) and the working folder
``OUT.train/`` (lock, checkpoint, history). Rerunning resumes; a complete folder is left as it is.
See :mod:`pipeline.finetune.loop`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from pipeline.finetune.config import FinetuneConfig
from pipeline.finetune.loop import FinetuneResult, finetune as run
from pipeline.progress import ProgressFn, silent


def finetune(config: FinetuneConfig, out: str | Path, progress: ProgressFn = silent,
             restart: bool = False) -> FinetuneResult:
    """Fine-tune into ``out`` with absolute paths in the config (a resumed run from another
    working directory is the same run)."""
    config = dataclasses.replace(
        config, manifests=str(Path(config.manifests).resolve()),
        weights=None if config.weights is None else str(Path(config.weights).resolve()))
    return run(config, Path(out), progress=progress, restart=restart)
