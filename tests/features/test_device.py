"""``--device cuda`` on a machine without CUDA fails when the extractors are built, in one line."""

import pytest
import torch

from pipeline.errors import PipelineError
from pipeline.features.plan import resolve_device


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line_before_any_work():
    with pytest.raises(PipelineError) as error:
        resolve_device("cuda:1")
    assert str(error.value) == "--device cuda:1: this machine has no CUDA device torch can use"
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
