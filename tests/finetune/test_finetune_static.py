"""Two-stage fine-tune: ``finetune --static rafdb:ROOT`` (timm's ``test_resnet`` on RAF-DB still
images, each a frame of a chunk clip), then ``finetune --manifests M --weights W1`` on the
Aff-Wild2-layout demo from those weights."""

import json

import torch

from cli.main import main
from pipeline.features.weights_record import read_record, sha256_file
from pipeline.finetune.backbone_choice import backbone_for
from pipeline.finetune.config import build_config
from pipeline.finetune.loop import work_dir
from tests.data import static_layouts

SETS = ["--set", "epochs=1", "--set", "batch_size=8", "--set", "model=test_resnet",
        "--set", "dev_min_videos=2"]


def test_static_then_affwild2(tmp_path, demo_manifests, capsys):
    root = static_layouts.rafdb(tmp_path / "RAF-DB", per_class=3)
    w1, w2 = tmp_path / "W1", tmp_path / "W2"
    assert main(["finetune", "--static", f"rafdb:{root}", "--out", str(w1), *SETS]) == 0
    printed = capsys.readouterr().out
    # every bad line of the list, one line each, and the missing image
    assert printed.count("rejected: ") == 5 and "list_patition_label.txt:29: label '9'" in printed
    store = tmp_path / "W1.static"
    first = read_record(w1)
    assert first.model == "test_resnet" and first.initial_weights is None
    trained = set(first.clips["train"]) | set(first.clips["dev"])
    assert trained and all(c.startswith("rafdb_train_") for c in trained)  # never RAF-DB's test
    assert json.loads((store / "report.json").read_text())["frames"]["train"] == 21

    assert main(["finetune", "--manifests", str(demo_manifests), "--weights", str(w1),
                 "--out", str(w2), *SETS]) == 0
    second = read_record(w2)
    assert second.initial_weights == str(w1.resolve())
    assert second.initial_weights_sha256 == sha256_file(w1)
    assert not any(c.startswith("rafdb_") for c in second.clips["train"])
    # trained from W1's backbone and at W1's preprocessing (its crop size, 32 px)
    assert second.preprocessing["input_size"] == first.preprocessing["input_size"] == [3, 32, 32]
    best = torch.load(work_dir(w1) / "checkpoint.pt", weights_only=True)["best_state"]
    config = build_config(demo_manifests, weights=str(w1), sets=[s for s in SETS if s != "--set"])
    initial = backbone_for(config).build().state_dict()  # what stage two starts from
    assert initial.keys() == best.keys() and all(torch.equal(initial[k], best[k]) for k in best)
    # the rerun of stage one keeps the prepared store and the complete weights
    assert main(["finetune", "--static", f"rafdb:{root}", "--out", str(w1), *SETS]) == 0
    assert "already prepared" in capsys.readouterr().out


def test_static_and_manifests_are_exclusive(tmp_path, demo_manifests):
    root = static_layouts.rafdb(tmp_path / "RAF-DB")
    assert main(["finetune", "--static", f"rafdb:{root}", "--manifests", str(demo_manifests),
                 "--out", str(tmp_path / "W")]) != 0
    assert main(["finetune", "--out", str(tmp_path / "W")]) != 0


def test_torchrun_needs_the_store_prepared_first(tmp_path, monkeypatch, capsys):
    root = static_layouts.rafdb(tmp_path / "RAF-DB")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["finetune", "--static", f"rafdb:{root}", "--out", str(tmp_path / "W"), *SETS]) != 0
    assert "run `fer-pipeline static-data rafdb:" in capsys.readouterr().err
    assert not (tmp_path / "W.static").exists()
