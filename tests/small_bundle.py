"""The small pipeline the bundle and predict tests apply: the demo at 8 clips of 16 frames, timm's
``test_vit`` on faces and the TDNN on audio, an ``image`` and an ``audio`` head trained 2 epochs,
their ensemble and its bundle (built with the CLI, as a user builds one)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from cli.main import main


def build(root: Path, image_options: Sequence[str] = (),
          ensemble_options: Sequence[str] = ("--no-nested",)) -> tuple[Path, Path, list[Path], Path, Path]:
    """``(data, manifests, runs, scores, pipeline)`` under ``root``; ``image_options`` go to the
    image head's ``fuse``, ``ensemble_options`` to ``ensemble`` (which always tunes on the same
    split, without bootstrap)."""
    data, manifests, store = root / "data", root / "manifests", root / "store.zarr"
    assert main(["demo-data", str(data), "--clips", "8", "--frames", "16", "--seed", "3"]) == 0
    assert main(["manifest", str(data), "--out", str(manifests)]) == 0
    assert main(["extract", "--manifests", str(manifests), "--store", str(store), "-e", "timm",
                 "--set", "configs.timm.model=test_vit", "-e", "tdnn", "--precision", "fp32"]) == 0
    runs = []
    image = ["--set", "head.image=timm", *image_options]
    for method, options in (("image", image), ("audio", [])):
        assert main(["fuse", "--method", method, "--store", str(store), "--manifests",
                     str(manifests), "--out", str(root / "runs"), "--set", "train.epochs=2",
                     *options]) == 0
        runs.append(root / "runs" / method)
    scores = root / "scores"
    assert main(["ensemble", *map(str, runs), "--manifests", str(manifests), "--out", str(scores),
                 "--tune-on", "same", *ensemble_options, "--bootstrap", "0"]) == 0
    pipeline = root / "pipeline"
    assert main(["bundle", str(scores), *map(str, runs), "--out", str(pipeline)]) == 0
    return data, manifests, runs, scores, pipeline
