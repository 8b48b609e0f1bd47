"""Stage one's config is checked when it is built, against the library's own choice lists."""

import pytest

from pipeline import config as config_io
from pipeline.errors import PipelineError
from pipeline.features.config import ExtractConfig, Precision
from pipeline.features.extractors import PRECISIONS


@pytest.mark.parametrize("fields, message", [
    ({"extractors": ["nope"]}, "unknown extractor 'nope'"),
    ({"weights": {"nope": "w.pth"}}, "unknown extractor 'nope'"),
    ({"extractors": ["swin", "swin"]}, "each once"),
    ({"extractors": []}, "at least one"),
    ({"batch_size": 0}, "at least 1"),
    ({"audio_stride": 0}, "at least 1"),
    ({"precision": "int8"}, "unknown precision 'int8'"),
])
def test_bad_fields_are_refused_when_the_config_is_built(fields, message):
    with pytest.raises(PipelineError, match=message):
        ExtractConfig(**fields)


def test_precision_choices_are_defined_once_and_stored_as_strings():
    assert tuple(p.value for p in Precision) == ("auto", *PRECISIONS) == ("auto", "fp32", "bf16", "fp16")
    config = ExtractConfig(precision=Precision.bf16)
    assert config.precision == "bf16" and type(config.precision) is str
    assert config_io.to_dict(config)["precision"] == "bf16"


def test_overrides_are_checked_too():
    with pytest.raises(PipelineError, match="at least 1"):
        config_io.override(ExtractConfig(), ["batch_size=0"])
