"""The cross-clip batch stream: full padded batches, pieces split across batches, outputs per owner."""

import numpy as np
import pytest
import torch

from pipeline.features.batching import BatchStream


class Recorder:
    """A model that records the batches it saw and returns each row's sum, doubled values."""

    def __init__(self):
        self.seen = []

    def __call__(self, batch):
        self.seen.append(batch.clone())
        return {"sum": batch.sum(dim=1), "double": batch * 2}


def rows_of(n: int, offset: float = 0.0):
    """Rows 0..n-1 of an owner, each a 3-vector of its index plus ``offset``."""
    values = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, 3) + offset
    return np.arange(n), values


def test_runs_only_full_batches_until_flushed():
    model = Recorder()
    stream = BatchStream(model, batch_size=4)
    stream.add("a", *rows_of(3))
    assert stream.step(flush=False) == [] and model.seen == []
    stream.add("b", *rows_of(3, offset=10))
    pieces = stream.step(flush=False)
    assert len(model.seen) == 1 and stream.pending == 2
    # "a" whole, then the head of "b": a piece split across batches comes back in two parts.
    assert [(p.owner, p.rows.tolist()) for p in pieces] == [("a", [0, 1, 2]), ("b", [0])]
    rest = stream.step(flush=True)
    assert [(p.owner, p.rows.tolist()) for p in rest] == [("b", [1, 2])]
    assert stream.pending == 0 and stream.step(flush=True) == []


def test_every_batch_has_batch_size_rows_padded_with_zeros():
    model = Recorder()
    stream = BatchStream(model, batch_size=4)
    stream.add("a", *rows_of(5, offset=1))
    stream.step(flush=True)
    assert [tuple(b.shape) for b in model.seen] == [(4, 3), (4, 3)]
    torch.testing.assert_close(model.seen[1][1:], torch.zeros(3, 3))


def test_outputs_are_each_rows_own_result_in_float32():
    model = Recorder()
    stream = BatchStream(model, batch_size=3)
    inputs = {}
    for owner, n, offset in (("a", 2, 0.0), ("b", 4, 100.0), ("c", 1, 7.5)):
        rows, values = rows_of(n, offset)
        inputs[owner] = values.numpy()
        stream.add(owner, rows, values)
    got = {}
    for piece in stream.step(flush=True):
        for name, value in piece.outputs.items():
            assert value.dtype == np.float32 and len(value) == len(piece.rows)
            got.setdefault((piece.owner, name), {}).update(zip(piece.rows.tolist(), value))
    for owner, values in inputs.items():
        for row, x in enumerate(values):
            np.testing.assert_array_equal(got[owner, "double"][row], x * 2)
            assert got[owner, "sum"][row] == pytest.approx(x.sum())


def test_a_rows_result_does_not_depend_on_its_batch_neighbours():
    # The same rows, queued behind different neighbours, give bit-identical outputs.
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 5)

    def model(batch):
        return {"y": layer(batch)}

    target = torch.randn(6, 3)
    results = []
    for n_before in (0, 2, 5):
        stream = BatchStream(model, batch_size=4)
        stream.add("before", np.arange(n_before), torch.randn(n_before, 3))
        stream.add("target", np.arange(6), target)
        pieces = [p for p in stream.step(flush=True) if p.owner == "target"]
        results.append(np.concatenate([p.outputs["y"] for p in pieces]))
    assert all(np.array_equal(results[0], r) for r in results[1:])
