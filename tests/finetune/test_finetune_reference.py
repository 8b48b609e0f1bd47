"""The plain-loop reference (issue 32): on a small geometry demo (the face's cue is the mouth's
shape, which a random network's features cannot read), ``finetune``'s training loss falls as fast
as a plain torch loop's (:mod:`tests.finetune.plain_loop`) from the same seeded resnet10t.

Measured on this fixture (48 px crops, 4 training clips, lr 1e-3, batch 32, no augmentation, one
thread), mean training loss per epoch:

* the plain loop: 2.035, 1.644, 1.572, 1.459 (1.357 at epoch 5);
* finetune: 2.053, 1.703, 1.531, 1.463 (1.354);
* finetune before issue 32 (PyTorch's uniform init, crops upsampled to resnet10t's 176 px):
  2.036, 1.802, 1.669, 1.555 (1.504), and 3.8x the time.

Tolerance: from the second epoch on, finetune's loss within 0.08 of the reference's (the
class-balanced draw and gradient clipping make the curves differ by up to 0.06 here; before issue
32: 0.16, 0.10, 0.10), and its fall over the four epochs at least 0.9 of the reference's (1.02;
before: 0.84).
"""

import json

import pytest
import torch

from pipeline.data.dataset import read_dataset
from pipeline.data.manifest import write_manifests
from pipeline.data.synthetic import DemoConfig, generate
from pipeline.finetune.config import build_config
from pipeline.finetune.loop import work_dir
from pipeline.finetune.split import dev_split
from stages.finetune import finetune
from tests.finetune import plain_loop

pytestmark = pytest.mark.slow  # two trainings of resnet10t (about a minute each on 2 cores)

EPOCHS = 4
SETS = ["model=resnet10t", f"epochs={EPOCHS}", f"patience={EPOCHS}", "lr=1e-3", "head_lr=1e-3",
        "batch_size=32", "augment.enabled=false"]


@pytest.fixture(scope="module")
def geometry(tmp_path_factory):
    root = tmp_path_factory.mktemp("geometry")
    generate(root / "data", DemoConfig(clips=8, frames=60, seed=0, size=48, face_cue="geometry"))
    write_manifests(read_dataset(root / "data"), root / "manifests")
    return root


def test_finetune_loss_falls_as_fast_as_a_plain_loop(geometry):
    config = build_config(geometry / "manifests", sets=SETS)
    train, _, _ = dev_split(config)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as finetune's default `threads` (and the numbers above)
    try:
        _, reference = plain_loop.train(train, model="resnet10t", epochs=EPOCHS)
    finally:
        torch.set_num_threads(threads)
    ref = [h["loss"] for h in reference]
    result = finetune(config, geometry / "tuned")
    ours = [h["loss"] for h in json.loads((work_dir(result.out) / "history.json").read_text())["epochs"]]
    assert len(ours) == EPOCHS
    assert all(o <= r + 0.08 for o, r in zip(ours[1:], ref[1:])), (ours, ref)
    assert ours[0] - ours[-1] >= 0.9 * (ref[0] - ref[-1]), (ours, ref)
