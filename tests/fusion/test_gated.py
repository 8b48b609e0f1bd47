"""The ``gated`` head: gates computed as its docstring writes them, a missing face's gate is 0 by
construction, re-crops averaged, softmax gates sum to one over the present arrays."""

import numpy as np
import pytest
import torch

from pipeline.features.store import FeatureStore
from pipeline.fusion.data import check_inputs, load_table
from pipeline.fusion.heads.gated import GatedConfig, GatedHead, crop_names
from pipeline.training.sampling import SamplingConfig

from .synthetic import make_dataset


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    data = make_dataset(tmp_path_factory.mktemp("gated"), splits={"train": 2, "val": 1},
                        frames=30, faceless=0.3)
    store = FeatureStore(data.store, "a")
    rng = np.random.default_rng(5)
    for clip in data.clips:  # a second re-crop of "swin"
        swin = store.read(clip.clip_id, "swin").astype(np.float32)
        store.write(clip.clip_id, "swin_crop1", (swin + rng.normal(size=swin.shape)).astype(
            np.float16), cache_key="test", rate=10.0)
    return data


def _head(data, **changes):
    config = GatedConfig(**{"dim": 8, "dropout": 0.0, **changes})
    request = GatedHead.request(config, SamplingConfig())
    store = FeatureStore(data.store)
    dims = check_inputs(store, data.clips, request)
    torch.manual_seed(0)
    head = GatedHead(config, dims).eval()
    return head, load_table(store, data.clips, request, dims, train=False)


@pytest.mark.parametrize("gate", ["sigmoid", "softmax"])
@pytest.mark.parametrize("width", ["scalar", "channel"])
def test_missing_face_gets_gate_zero_and_no_say(data, gate, width):
    head, table = _head(data, gate=gate, gate_width=width)
    rows = np.arange(table.n_rows)
    inputs, _, _ = head.batch(table, rows, None)
    faceless = ~table.valid
    assert faceless.any() and table.valid.any()
    with torch.no_grad():
        g, _ = head.gates(inputs)
        out = head(inputs)["main"]
        garbage = inputs["x0"] + 100.0 * torch.randn_like(inputs["x0"])
        garbage[torch.from_numpy(faceless)] = float("nan")  # whatever the store holds there
        inputs["x0"] = garbage
        out_garbage = head(inputs)["main"]
    assert float(g[torch.from_numpy(faceless), 0].abs().max()) == 0.0
    assert float(g[torch.from_numpy(table.valid), 0].min()) > 0.0
    np.testing.assert_array_equal(out[faceless], out_garbage[faceless])
    assert not torch.equal(out[~faceless], out_garbage[~faceless])
    if gate == "softmax":
        np.testing.assert_allclose(g.sum(dim=1).numpy(), 1.0, atol=1e-6)


def test_gates_and_output_computed_directly(data):
    head, table = _head(data, gate="sigmoid")
    rows = np.arange(10)
    inputs, _, _ = head.batch(table, rows, None)
    with torch.no_grad():
        out = head(inputs)["main"].numpy()
        h = [head.project[m](inputs[f"x{m}"]).numpy() for m in range(4)]
        present = inputs["present"].numpy().astype(np.float32)
        h = [h[m] * present[:, m:m + 1] for m in range(4)]
        w = head.gate_layer.weight.numpy()
        z = np.concatenate(h, axis=1) @ w.T + head.gate_layer.bias.numpy()
        g = present / (1.0 + np.exp(-z))
        fused = sum(g[:, m:m + 1] * h[m] for m in range(4))
        expected = head.classifier(torch.from_numpy(fused.astype(np.float32))).numpy()
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_recrops_are_averaged(data):
    head, table = _head(data, crops=2)
    assert head.request(head.config, SamplingConfig()).arrays[:2] == ("swin", "swin_crop1")
    assert crop_names("dino", 3) == ("dino", "dino_crop1", "dino_crop2")
    rows = np.arange(table.n_rows)
    inputs, _, _ = head.batch(table, rows, None)
    expected = (table.take("swin", rows) + table.take("swin_crop1", rows)) / 2
    np.testing.assert_allclose(inputs["x0"].numpy(), expected, atol=1e-6)


def test_faceless_frames_train_when_they_have_audio(data):
    head, table = _head(data)
    ok = head.trainable(table)
    assert (ok & ~table.valid).any()
    assert not (ok & (table.labels < 0)).any()


@pytest.mark.parametrize("name", ["gated", "xattn", "tcn"])
def test_faceless_rule_is_an_option(data, name):
    from pipeline.data.frames import nearest_face
    from pipeline.errors import PipelineError
    from pipeline.fusion.heads import registry
    from pipeline.fusion.evaluation import predict_table

    cls = registry()[name]
    small = {"xattn": {"length": 12, "eval_stride": 6}, "tcn": {"length": 12, "eval_stride": 6,
                                                                  "levels": 2}}.get(name, {})
    request = cls.request(cls.Config(**small), SamplingConfig())
    store = FeatureStore(data.store)
    dims = check_inputs(store, data.clips, request)
    table = load_table(store, data.clips, request, dims, train=False)
    probs = {}
    for rule in ("own", "nearest"):
        torch.manual_seed(0)
        head = cls(cls.Config(**small, faceless=rule), dims).eval()
        assert head.filled_outputs == (() if rule == "own" else ("main",))
        probs[rule] = predict_table(head, table, 64)["main"]
    assert not np.array_equal(probs["own"][~table.valid], probs["nearest"][~table.valid])
    for i in range(len(table.clip_ids)):
        rows = table.clip_rows(i)
        np.testing.assert_array_equal(probs["nearest"][rows],
                                      probs["own"][rows][nearest_face(table.valid[rows])])
    with pytest.raises(PipelineError, match="faceless 'fill'"):
        cls(cls.Config(**small, faceless="fill"), dims)
