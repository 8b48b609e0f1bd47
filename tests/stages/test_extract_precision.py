"""The run report and summary say which precision ``auto`` resolved to, and why."""

from __future__ import annotations

import json

import pytest
from extract_fixtures import TINY_LOGMEL, TINY_TDNN, make_dataset

from pipeline.features import config as config_module
from pipeline.features.config import ExtractConfig
from stages.extract import run_extract


@pytest.mark.parametrize("flags, expected", [({"amx_bf16"}, "bf16 (auto: this CPU has amx_bf16)"),
                                             (set(), "fp32 (auto: this CPU has no native bf16")])
def test_the_report_names_the_resolved_precision(tmp_path, monkeypatch, flags, expected):
    monkeypatch.setattr(config_module, "cpu_flags", lambda *a: set(flags))
    manifests = make_dataset(tmp_path / "data", n_clips=1, n_frames=8)
    config = ExtractConfig(extractors=["logmel", "tdnn"], device="cpu", batch_size=4,
                           configs={"tdnn": dict(TINY_TDNN), "logmel": dict(TINY_LOGMEL)})
    result = run_extract(config, manifests, tmp_path / "f.zarr")
    assert result.precision.startswith(expected)
    report = json.loads(open(result.report).read())
    assert report["result"]["precision"] == result.precision
    assert report["config"]["precision"] == "auto"
    assert report["extractors"]["tdnn"]["precision"] == expected.split()[0]
