"""``--precision auto``: bf16 where the hardware computes it natively, the resolved value in cache keys,
and the tolerance between bf16 and fp32 features."""

from __future__ import annotations

import dataclasses
from unittest import mock

import numpy as np
import pytest
import torch

from pipeline.features import config as config_module
from pipeline.features.config import ExtractConfig, resolve_precision
from pipeline.features.extractors import create
from pipeline.features.extractors.tdnn import TdnnConfig
from pipeline.features.plan import build_extractors

CPUINFO = "processor\t: 0\nflags\t\t: fpu sse2 avx2 {extra}\nbogomips\t: 4000\n"


@pytest.mark.parametrize("extra, expected", [
    ("avx512f avx512_bf16", "bf16"), ("amx_bf16 amx_tile", "bf16"), ("avx512f", "fp32"),
])
def test_auto_follows_the_cpu_flags(tmp_path, extra, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    precision, why = resolve_precision("auto", "cpu", cpuinfo)
    assert precision == expected and why.startswith("auto: ")
    assert expected == "fp32" or any(flag in why for flag in extra.split() if flag.endswith("_bf16"))
    assert resolve_precision("fp16", "cpu", cpuinfo) == ("fp16", "asked for")
    assert resolve_precision("auto", "cpu", tmp_path / "absent")[0] == "fp32"


@pytest.mark.parametrize("supported, expected", [(True, "bf16"), (False, "fp32")])
def test_auto_follows_the_cuda_device(supported, expected):
    with mock.patch.object(torch.cuda, "device", lambda d: mock.MagicMock()), \
            mock.patch.object(torch.cuda, "is_bf16_supported", lambda: supported), \
            mock.patch.object(torch.cuda, "get_device_name", lambda *a: "GPU X"):
        precision, why = resolve_precision("auto", "cuda:0")
    assert precision == expected and "GPU X" in why


@pytest.mark.parametrize("flags, expected", [({"avx512_bf16"}, "bf16"), (set(), "fp32")])
def test_extractors_and_cache_keys_get_the_resolved_precision(monkeypatch, flags, expected):
    monkeypatch.setattr(config_module, "cpu_flags", lambda *a: set(flags))
    config = ExtractConfig(extractors=["tdnn"], device="cpu")
    assert config.precision == "auto"
    auto = build_extractors(config)["tdnn"]
    explicit = build_extractors(dataclasses.replace(config, precision=expected))["tdnn"]
    assert auto.precision == expected and auto.cache_key == explicit.cache_key
    other = "fp32" if expected == "bf16" else "bf16"
    assert auto.cache_key != build_extractors(dataclasses.replace(config, precision=other))["tdnn"].cache_key


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_bf16_features_are_within_tolerance_of_fp32():
    """Stated tolerance: per-row cosine > 0.999 between bf16-autocast and fp32 features (a tiny
    timm ResNet and the TDNN, seeded random weights)."""
    from pipeline.features.extractors.timm_image import TimmImageConfig

    images = torch.rand(4, 3, 64, 64)
    kwargs = dict(config=TimmImageConfig(model="resnet10t"), seed=0)
    fp32 = create("timm", precision="fp32", **kwargs).forward(images)
    bf16 = create("timm", precision="bf16", **kwargs).forward(images)
    for name in fp32:
        a, b = fp32[name].reshape(4, -1).numpy(), bf16[name].reshape(4, -1).numpy()
        assert _cosines(a, b).min() > 0.999 and not np.array_equal(a, b)
    windows = torch.randn(6, 200, 64) * 10 - 40
    config = TdnnConfig(windows=(32,))
    a = create("tdnn", config=config, precision="fp32").embed(windows).numpy()
    b = create("tdnn", config=config, precision="bf16").embed(windows).numpy()
    assert _cosines(a, b).min() > 0.999 and not np.array_equal(a, b)
