"""``finetune.json`` is checked against its schema before use: every bad key is one line naming
the file and the key (issue 37's trials), and a seeded fuzz of mutated records never gives a
traceback, a record the extractor then chokes on, or a write."""

import copy
import hashlib
import json
import random

import pytest

from pipeline.compat import ensure_torchvision

ensure_torchvision()

import timm.data  # noqa: E402

from pipeline.errors import PipelineError  # noqa: E402
from pipeline.features.extractors import create  # noqa: E402
from pipeline.features.extractors.timm_image import TimmImageConfig  # noqa: E402
from pipeline.features.weights_record import (  # noqa: E402
    RECORD_NAME,
    image_data_config,
    read_record,
    write_weights_folder,
)
from tests.features.test_timm_image import reference_model  # noqa: E402
from tests.features.test_weights_record import record  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("schema") / "ft"
    return write_weights_folder(out, reference_model("test_resnet", seed=3).state_dict(),
                                record("timm", "test_resnet", {}))


@pytest.fixture
def valid(folder):
    original = (folder / RECORD_NAME).read_text()
    yield json.loads(original)
    (folder / RECORD_NAME).write_text(original)


def _set(data, dotted, value):
    *parents, last = dotted.split(".")
    for key in parents:
        data = data[key]
    if value is DELETE:
        del data[last]
    else:
        data[last] = value


DELETE = object()

# (trial, dotted key, value, the key the error must name)
TRIALS = [
    ("interpolation bogus", "preprocessing.interpolation", "bogus", "preprocessing.interpolation"),
    ("2-value mean", "preprocessing.mean", [0.5, 0.5], "preprocessing.mean"),
    ("std all zero", "preprocessing.std", [0, 0, 0], "preprocessing.std[0]"),
    ("negative input side", "preprocessing.input_size", [3, -5, 160], "preprocessing.input_size"),
    ("crop_pct 5.0", "preprocessing.crop_pct", 5.0, "preprocessing.crop_pct"),
    ("8x8 input", "preprocessing.input_size", [3, 8, 8], "preprocessing.input_size"),
    ("mean of strings", "preprocessing.mean", ["a", "b", "c"], "preprocessing.mean[0]"),
    ("crop_pct a string", "preprocessing.crop_pct", "0.9", "preprocessing.crop_pct"),
    ("epoch a string", "epoch", "1", "epoch"),
    ("preprocessing a list", "preprocessing", [], "preprocessing"),
    ("missing preprocessing key", "preprocessing.mean", DELETE, "preprocessing.mean"),
    ("missing top-level key", "model", DELETE, "model"),
    ("unknown preprocessing key", "preprocessing.intepolation", "bilinear",
     "preprocessing.intepolation"),
    ("unknown top-level key", "notes", "hand-edited", "notes"),
]


@pytest.mark.parametrize("trial,key,value,named", TRIALS, ids=[t[0] for t in TRIALS])
def test_bad_record_is_one_line_naming_file_and_key(folder, valid, trial, key, value, named):
    data = copy.deepcopy(valid)
    _set(data, key, value)
    (folder / RECORD_NAME).write_text(json.dumps(data))
    with pytest.raises(PipelineError) as e:
        create("timm", config=TimmImageConfig(model="test_resnet"), weights=folder)
    message = str(e.value)
    assert message.startswith(f"{folder / RECORD_NAME}: {named}:"), message
    assert "\n" not in message


def test_the_sane_minimum_image_side_is_accepted(folder, valid):
    data = copy.deepcopy(valid)
    data["preprocessing"]["input_size"] = [3, 32, 32]
    (folder / RECORD_NAME).write_text(json.dumps(data))
    ext = create("timm", config=TimmImageConfig(model="test_resnet"), weights=folder)
    assert tuple(ext.data_config["input_size"]) == (3, 32, 32)


# ---- fuzz ---------------------------------------------------------------------------------------

VALUES = [None, True, 0, -1, 1, 2.5, 1e9, float("inf"), "", "bilinear", "x" * 70, [], [1],
          [3, 64, 64], [0.5, 0.5, 0.5], [0, 0, 0], [3, 1e9, 2], {}, {"a": 1}, "f" * 64]


def _paths(data, prefix=""):
    """Every dotted key of ``data`` (tables and lists of up to 3 items)."""
    out = []
    items = data.items() if isinstance(data, dict) else enumerate(data[:3])
    for key, value in items:
        path = f"{prefix}{key}"
        out.append(path)
        if isinstance(value, (dict, list)):
            out += _paths(value, path + ".")
    return out


def _mutate(data, rng):
    """One seeded mutation of a record: a key removed, changed, renamed or added."""
    data = copy.deepcopy(data)
    path = rng.choice(_paths(data))
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    last = int(last) if isinstance(node, list) else last
    kind = rng.choice(["delete", "value", "value", "rename", "add"])
    if kind == "delete":
        del node[last]
    elif kind == "value":
        node[last] = copy.deepcopy(rng.choice(VALUES))
    elif kind == "rename" and isinstance(node, dict):
        node[last + "_"] = node.pop(last)
    elif isinstance(node, dict):
        node["extra"] = copy.deepcopy(rng.choice(VALUES))
    else:
        node.append(copy.deepcopy(rng.choice(VALUES)))
    return data


def _snapshot(root):
    return {p.relative_to(root).as_posix(): (p.stat().st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_fuzzed_records_give_one_line_errors_and_no_writes(folder, valid):
    """300 seeded mutations (and 40 byte-level cuts): each is refused in one line naming the
    record, or accepted as a record whose preprocessing timm's transform takes; nothing under
    the folder's parent changes but the record this test writes."""
    rng = random.Random(37)
    root = folder.parent
    base = timm.data.resolve_model_data_config(reference_model("test_resnet", 0))
    texts = [json.dumps(_mutate(valid, rng)) for _ in range(300)]
    raw = json.dumps(valid)
    texts += [raw[: rng.randrange(len(raw))] for _ in range(20)]
    texts += [raw.replace(rng.choice([",", ":", "[", "\""]), rng.choice(["", "]", "{"]), 1)
              for _ in range(20)]
    accepted = 0
    for text in texts:
        (folder / RECORD_NAME).write_text(text)
        before = _snapshot(root)
        try:
            rec = read_record(folder)
        except PipelineError as e:
            message = str(e)
            assert "\n" not in message and message.startswith(str(folder)), (text, message)
        else:
            accepted += 1
            config = image_data_config(base, rec)
            timm.data.create_transform(**config, is_training=False)
            assert rec.preprocessing["interpolation"] in ("bilinear", "bicubic", "nearest",
                                                          "lanczos", "box", "hamming")
        assert _snapshot(root) == before, text
    assert accepted < len(texts)  # the mutations do break records


def test_a_bad_recorded_frontend_names_the_file_and_key(tmp_path):
    from pipeline.features.extractors.tdnn import TdnnConfig, XVector

    c = TdnnConfig(windows=(4,), channels=(16, 16, 16, 16, 24), embedding_dim=8)
    net = XVector(64, c.channels, c.kernels, c.dilations, c.embedding_dim)
    folder = write_weights_folder(tmp_path / "ft", net.state_dict(), record(
        "tdnn", "xvector", {"frontend": {"n_mels": 64}, "mean_norm": "sliding",
                            "cmn_seconds": 3.0}))
    data = json.loads((folder / RECORD_NAME).read_text())
    data["preprocessing"]["frontend"]["n_melz"] = 64
    (folder / RECORD_NAME).write_text(json.dumps(data))
    with pytest.raises(PipelineError) as e:
        create("tdnn", config=c, weights=folder)
    message = str(e.value)
    assert message.startswith(f"{folder / RECORD_NAME}: preprocessing.frontend: ") and "n_melz" in message
    assert "\n" not in message
