"""The 2026 leaders' fine-tune presets (``finetune --preset sun2026 | yu2026``): their resolved
values, and a tiny timm ViT standing in for the large models to show they train as resolved
(layer decay groups, warmup then cosine, the MoE classifier)."""

import json

import pytest

from pipeline.compat import ensure_torchvision

ensure_torchvision()

from pipeline.features.weights_record import read_record  # noqa: E402
from pipeline.finetune.config import build_config  # noqa: E402
from stages.finetune import finetune  # noqa: E402


def test_sun2026_resolves_dinov2_moe_layer_decay_warmup_cosine(demo_manifests):
    c = build_config(demo_manifests, preset="sun2026", allow_random_weights=True)
    assert (c.backbone, c.model) == ("timm", "vit_large_patch14_dinov2.lvd142m")
    assert (c.lr, c.head_lr, c.lr_decay, c.weight_decay, c.epochs) == (2e-5, 1e-3, 0.75, 0.05, 10)
    assert (c.schedule.kind, c.schedule.warmup_epochs) == ("cosine", 1)
    assert c.classifier.experts == 4 and c.augment.pad_prob == 0.3


def test_yu2026_resolves_beit_large_focal(demo_manifests):
    c = build_config(demo_manifests, preset="yu2026", allow_random_weights=True)
    assert c.model == "beit_large_patch16_224.in22k_ft_in22k_in1k"
    assert (c.lr_decay, c.schedule.kind, c.schedule.warmup_epochs) == (0.75, "cosine", 1)
    assert (c.loss.kind, c.loss.gamma, c.sampling.balance) == ("focal", 2.0, "none")
    assert c.classifier.experts == 0


@pytest.mark.parametrize("preset", ["sun2026", "yu2026"])
def test_preset_trains_with_a_tiny_vit_standing_in(preset, demo_manifests, tmp_path):
    sets = ["model=test_vit", "epochs=2", "batch_size=16"]
    config = build_config(demo_manifests, preset=preset, sets=sets, allow_random_weights=True,
                          allow_other_model=True)  # test_vit: not the paper's, said so
    result = finetune(config, tmp_path / preset)
    record = read_record(result.out)
    assert record.model == "test_vit" and record.config["lr_decay"] == 0.75
    assert record.config["schedule"]["kind"] == "cosine"
    rows = [json.loads(line) for line in
            (tmp_path / f"{preset}.train" / "epochs.jsonl").read_text().splitlines()]
    assert len(rows) == 2
    # warmup to the peak in epoch 1, cosine down in epoch 2; layer decay spreads the groups
    assert rows[1]["lr_max"] < rows[0]["lr_max"] / 2
    assert rows[0]["lr_min"] < rows[0]["lr_max"] / 100
    assert record.config["classifier"]["experts"] == (4 if preset == "sun2026" else 0)
