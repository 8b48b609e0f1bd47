"""``precision = "fp16"`` trains through a GradScaler (pipeline.training.step.Stepper): every
loss is scaled before backward and the scaler's state is checkpointed for a resume.

fp16 autocast needs CUDA; on this CPU-only machine the forward's autocast is replaced by a
no-op, so what runs is the loop's fp16 step path on a CPU GradScaler."""

import contextlib

import torch

from pipeline.finetune import loop
from pipeline.finetune.config import build_config
from pipeline.finetune.loop import work_dir
from stages.finetune import finetune

SETS = ["epochs=1", "batch_size=16", "model=test_resnet", "precision=fp16"]


def test_fp16_scales_every_loss_and_checkpoints_the_scaler(demo_manifests, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "autocast", lambda config, device: contextlib.nullcontext())
    scaled = []
    scale = torch.amp.GradScaler.scale

    def spy(self, outputs):
        scaled.append(self.is_enabled())
        return scale(self, outputs)

    monkeypatch.setattr(torch.amp.GradScaler, "scale", spy)
    out = tmp_path / "fp16"
    finetune(build_config(demo_manifests, sets=SETS), out)
    assert scaled and all(scaled)  # every micro-batch's loss went through an enabled scaler
    state = torch.load(work_dir(out) / "checkpoint.pt", weights_only=True)
    assert state["scaler"]["scale"] > 0
    # fp32 keeps its checkpoint as before: no scaler state
    scaled.clear()
    finetune(build_config(demo_manifests, sets=[*SETS[:-1], "precision=fp32"]), tmp_path / "fp32")
    assert not any(scaled)
    assert "scaler" not in torch.load(work_dir(tmp_path / "fp32") / "checkpoint.pt",
                                      weights_only=True)
