"""Multi-task training (paper 003): AU labels in tables by task split, the AU loss against the
paper's formula, the three schedules (an epoch-schedule step changes only the trunk and that
task's head), and a multi-task run's AU predictions and scores against scikit-learn."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import f1_score

from pipeline.data.labels import NUM_AUS, UNLABELED
from pipeline.errors import PipelineError
from pipeline.features.store import FeatureStore
from pipeline.fusion.config import build_config
from pipeline.fusion.data import FeatureRequest, check_inputs, load_table
from pipeline.training import sampling
from pipeline.training.losses import au_batch_loss, au_pos_weights
from pipeline.data.task_splits import run_splits
from pipeline.fusion.tasks import batch_loss, task_batches
from pipeline.training.tasks import AU, EXPR, epoch_tasks
from pipeline.fusion.train import train
from pipeline.fusion.training_run import TrainingRun
from pipeline.progress import silent
from pipeline.runs.predictions import Predictions, prediction_path

from .synthetic import make_dataset, with_au_labels

FAST = ["train.epochs=2", "train.patience=10", "train.batch_size=16", 'head.tasks=["expr","au"]']
SMALL = {
    "image": ["head.hidden=8"],
    "sequence": ["head.dim=16", "head.heads=2", "head.ff=32", "head.length=10",
                 "head.eval_stride=5", "head.train_stride=5"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Synthetic clips with AU labels (:func:`.synthetic.with_au_labels`): train00 is
    expression-train and AU-val; train03 is AU-only (train); val00 is AU-only (val) as well;
    train01 lacks AU labels on a stretch of frames."""
    return with_au_labels(make_dataset(tmp_path_factory.mktemp("tasks"),
                                       splits={"train": 4, "val": 2, "test": 1}, frames=40,
                                       faceless=0.1))


def _config(data, method, *sets):
    return build_config(method, data.store, data.manifests, sets=[*FAST, *SMALL[method], *sets])


def _run(data, method, *sets, tmp_path):
    run = TrainingRun(_config(data, method, *sets), tmp_path, data.clips,
                      FeatureStore(data.store), silent)
    run.build()
    run.au_pos_weight = run.positive_weights() if run.head.au_outputs else None
    return run


def test_run_splits_follow_each_tasks_split(data):
    expr_only = run_splits(data.clips, ("expr",))
    assert [c.clip_id for c in expr_only["train"]] == ["train00", "train01", "train02"]
    assert [c.clip_id for c in expr_only["val"]] == ["val01"]
    both = run_splits(data.clips, ("expr", "au"))
    assert [c.clip_id for c in both["train"]] == ["train00", "train01", "train02", "train03"]
    assert sorted(c.clip_id for c in both["val"]) == ["train00", "val00", "val01"]
    assert [c.clip_id for c in both["test"]] == ["test00"]


def test_training_tables_hold_only_training_labels_of_each_task(data):
    store = FeatureStore(data.store)
    request = FeatureRequest(arrays=("swin",), tasks=("expr", "au"))
    clips = {c.clip_id: c for c in data.clips}
    chosen = [clips[k] for k in ("train00", "train01", "train03")]
    dims = check_inputs(store, chosen, request)
    table = load_table(store, chosen, request, dims, train=True)
    rows = {k: table.clip_rows(i) for i, k in enumerate(table.clip_ids)}
    # train00: expression train, AU val -> trains expressions only
    assert np.array_equal(table.labels[rows["train00"]], clips["train00"].labels)
    assert (table.au_labels[rows["train00"]] == UNLABELED).all()
    # train03: AU only -> trains AUs only
    assert (table.labels[rows["train03"]] == UNLABELED).all()
    assert np.array_equal(table.au_labels[rows["train03"]], clips["train03"].au_labels)
    # train01: both, with a stretch of frames without AU labels
    assert np.array_equal(table.au_labels[rows["train01"]], clips["train01"].au_labels)
    assert (table.au_labels[rows["train01"]][5:15] == UNLABELED).all()
    # evaluation tables keep the AU labels of train00 (its AU validation frames)
    evaluation = load_table(store, [clips["train00"]], request, dims, train=False)
    assert np.array_equal(evaluation.au_labels, clips["train00"].au_labels)


def test_au_loss_is_the_papers_equation_1():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, NUM_AUS)) * 2
    targets = rng.integers(0, 2, size=(6, NUM_AUS)).astype(np.int8)
    targets[1, 3] = UNLABELED
    targets[4] = UNLABELED  # a frame without AU labels counts for nothing
    w = rng.uniform(0.5, 4, size=NUM_AUS)
    frame_weights = np.array([1, 2, 1, 0, 3, 1], dtype=np.float64)
    p = 1 / (1 + np.exp(-logits))
    t = np.clip(targets, 0, None)
    per = -(w * t * np.log(p) + (1 - t) * np.log(1 - p)) * (targets != UNLABELED)
    frame = per.sum(axis=1)
    keep = (targets != UNLABELED).any(axis=1) & (frame_weights > 0)
    expected = (frame_weights * frame)[keep].sum() / frame_weights[keep].sum()
    got = au_batch_loss(torch.tensor(logits), torch.tensor(targets), torch.tensor(frame_weights),
                        torch.tensor(w))
    assert float(got) == pytest.approx(expected, rel=1e-5)
    empty = torch.tensor(logits, requires_grad=True)
    zero = au_batch_loss(empty, torch.full((6, NUM_AUS), UNLABELED), None, torch.tensor(w))
    zero.backward()
    assert float(zero.detach()) == 0.0 and empty.grad is not None


def test_positive_weights_are_negatives_over_positives():
    counts = np.array([[30, 10]] * 10 + [[5, 0], [0, 7]])
    weights = au_pos_weights(counts)
    assert weights[:10] == pytest.approx([3.0] * 10)
    assert weights[10:] == pytest.approx([1.0, 1.0])


def test_batch_and_joint_schedules_arrange_the_tasks():
    examples = {EXPR: np.arange(50), AU: np.arange(100, 120)}
    rng = np.random.default_rng(0)
    batches = task_batches("batch", examples, 10, rng)
    tags = [int(t[0]) for _, t in batches]
    assert tags == [EXPR, AU, EXPR, AU, EXPR, EXPR, EXPR]
    assert all((t == t[0]).all() for _, t in batches)
    assert epoch_tasks(True, "epoch", 0) == (EXPR,) and epoch_tasks(True, "epoch", 1) == (AU,)
    assert epoch_tasks(True, "joint", 1) == epoch_tasks(True, "batch", 0) == (EXPR, AU)
    assert epoch_tasks(False, "epoch", 1) == (EXPR,)  # an expression-only head: one task
    state = rng.bit_generator.state
    epoch = task_batches("epoch", {AU: examples[AU]}, 10, rng)
    assert [len(c) for c, _ in epoch] == [10, 10] and all((t == AU).all() for _, t in epoch)
    single = task_batches("joint", {EXPR: examples[EXPR]}, 10, rng)  # one task: in order
    assert [c.tolist() for c, _ in single] == [list(range(b, b + 10)) for b in range(0, 50, 10)]
    assert rng.bit_generator.state == state  # one task draws nothing
    joint = task_batches("joint", examples, 10, rng)
    rows = np.concatenate([c for c, _ in joint])
    tags = np.concatenate([t for _, t in joint])
    assert sorted(rows.tolist()) == list(range(50)) + list(range(100, 120))
    assert ((rows >= 100) == (tags == AU)).all()


def _snapshot(head):
    return {k: v.detach().clone() for k, v in head.state_dict().items()}


def _changed(before, head, prefix):
    after = head.state_dict()
    return [k for k in before if k.startswith(prefix) and not torch.equal(before[k], after[k])]


@pytest.mark.parametrize("method,expr_head,trunk", [("sequence", "classify.", "encoder."),
                                                     ("image", "classifier.net.5.",
                                                      "classifier.net.2.")])
def test_epoch_schedule_updates_only_the_trunk_and_that_tasks_head(data, tmp_path, method,
                                                                   expr_head, trunk):
    run = _run(data, method, "train.task_schedule=epoch", tmp_path=tmp_path)
    rates = run.class_rates()
    before = _snapshot(run.head)
    run.epoch = 0  # the first epoch trains expressions
    run.train_epoch(rates)
    assert _changed(before, run.head, expr_head) and _changed(before, run.head, trunk)
    assert not _changed(before, run.head, "au_layer.")  # bit-identical
    before = _snapshot(run.head)
    run.epoch = 1  # the second trains AUs
    run.train_epoch(rates)
    assert _changed(before, run.head, "au_layer.") and _changed(before, run.head, trunk)
    assert not _changed(before, run.head, expr_head)


def test_multitask_expression_draws_keep_the_equal_interval_grid(data, tmp_path, monkeypatch):
    """The one epoch loop draws a multi-task head's expression examples from frames on the
    sampling.interval grid, as a single-task head's (AU examples: every AU-labelled frame)."""
    run = _run(data, "image", "sampling.interval=3", tmp_path=tmp_path)
    rates = run.class_rates()
    drawn, checked = [], []
    draw, examples = sampling.draw, run.head.examples

    def spy_draw(labels, trainable, rates, rng):
        drawn.append(draw(labels, trainable, rates, rng))
        return drawn[-1]

    def spy_examples(table, counts, rng):
        if any(counts is d for d in drawn):  # the expression draw
            grid = sampling.equal_interval(table.offsets, 3)
            checked.append(bool(counts[grid].any()) and not counts[~grid].any())
        return examples(table, counts, rng)

    monkeypatch.setattr(sampling, "draw", spy_draw)
    monkeypatch.setattr(run.head, "examples", spy_examples)
    run.train_epoch(rates)
    assert checked and all(checked)


def test_joint_loss_is_the_sum_of_the_task_losses(data, tmp_path):
    run = _run(data, "image", "train.task_schedule=joint", "head.dropout=0.0", tmp_path=tmp_path)
    run.head.eval()  # no dropout: three forwards give the same logits
    table = next(run.stream.tables(run.splits["train"], train=True))
    au_ok = run.head.au_trainable(table)
    expr_rows = np.flatnonzero(run.head.trainable(table))[:8]
    au_rows = np.flatnonzero(au_ok)[:8]
    chunk = np.concatenate([expr_rows, au_rows])
    tags = np.r_[np.full(8, EXPR), np.full(8, AU)].astype(np.int8)
    counts = np.ones(table.n_rows, np.int64)
    settings = (run.device, run.config.loss, run.au_pos_weight)
    with torch.no_grad():
        joint = batch_loss(run.head, table, chunk, tags, counts, au_ok, *settings)
        expr = batch_loss(run.head, table, expr_rows, tags[:8], counts, au_ok, *settings)
        au = batch_loss(run.head, table, au_rows, tags[8:], counts, au_ok, *settings)
    assert float(joint) == pytest.approx(float(expr) + float(au), rel=1e-6)


def test_multitask_run_writes_and_scores_au_predictions(data, tmp_path):
    result = train(_config(data, "sequence", "train.task_schedule=batch"), tmp_path / "run",
                   data.clips, FeatureStore(data.store))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["outputs"] == ["main"] and metrics["au_outputs"] == ["au"]
    assert metrics["tasks"] == ["expr", "au"] and len(metrics["au_pos_weight"]) == NUM_AUS
    clips = {c.clip_id: c for c in data.clips}
    main = Predictions(prediction_path(tmp_path / "run", "val", "main"))
    au = Predictions(prediction_path(tmp_path / "run", "val", "au"))
    assert sorted(main) == ["val01"]  # the expression val split only
    assert sorted(au) == ["train00", "val00", "val01"]  # the AU val split
    assert sorted(Predictions(prediction_path(tmp_path / "run", "test", "au"))) == ["test00"]
    truth = np.concatenate([clips[k].au_labels for k in sorted(au)])
    probs = np.concatenate([au[k] for k in sorted(au)])
    assert probs.shape == truth.shape and ((probs >= 0) & (probs <= 1)).all()
    keep = (truth != UNLABELED).all(axis=1)
    expected = f1_score(truth[keep], (probs[keep] >= 0.5).astype(int), average="macro",
                        zero_division=0)
    assert result.val_au["mean_f1"] == pytest.approx(expected)
    assert metrics["val_au"]["mean_f1"] == pytest.approx(expected)


def test_bad_task_settings_are_one_line(data):
    with pytest.raises(PipelineError, match="head.tasks"):
        build_config("sequence", data.store, data.manifests, sets=['head.tasks=["au"]'])
    with pytest.raises(PipelineError, match="task_schedule"):
        build_config("sequence", data.store, data.manifests, sets=["train.task_schedule=sum"])
    with pytest.raises(PipelineError, match="au_pos_weight"):
        build_config("sequence", data.store, data.manifests, sets=["loss.au_pos_weight=[1.0]"])


@pytest.mark.parametrize("method", ["image", "sequence"])
def test_multitask_heads_predict_au_probabilities_beside_classes(data, tmp_path, method):
    run = _run(data, method, tmp_path=tmp_path)
    single = _run(data, method, 'head.tasks=["expr"]', tmp_path=tmp_path)
    table = next(run.stream.tables(run.splits["val"]))
    probs = run.head.predict(table, 64)
    assert probs["main"].shape == (table.n_rows, 8)
    assert np.allclose(probs["main"].sum(axis=1), 1, atol=1e-5)
    assert probs["au"].shape == (table.n_rows, NUM_AUS)
    assert ((probs["au"] > 0) & (probs["au"] < 1)).all()
    assert run.head.filled_outputs == ("main", "au") and not hasattr(single.head, "au_layer")
    assert set(single.head.predict(table, 64)) == {"main"}


def test_jin2021_preset_is_multitask_with_batch_alternation(data):
    config = build_config("sequence", data.store, data.manifests, preset="jin2021")
    assert config.head.tasks == ("expr", "au") and config.head.image == "iresnet"
    assert config.train.task_schedule == "batch" and config.train.optimizer == "sgd"
    assert config.loss.kind == "focal"


def test_au_task_without_au_labels_is_refused_in_one_line(tmp_path):
    data = make_dataset(tmp_path, splits={"train": 2, "val": 1}, frames=30)
    with pytest.raises(PipelineError, match="no training frame has AU labels"):
        train(build_config("image", data.store, data.manifests, sets=FAST), tmp_path / "run",
              data.clips, FeatureStore(data.store))
