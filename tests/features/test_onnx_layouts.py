"""``onnx`` beyond insightface: a FER2013-style model (48x48 grey input, two outputs) is fed its
own static input size and one channel, and stores the output named in ``output``; the values are
the torch model's own on the same pixels."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pipeline.errors import PipelineError
from pipeline.features.extractors import create
from pipeline.features.extractors.onnx_face import OnnxFaceConfig

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


class _TwoHeads(nn.Module):
    """A small grey-image CNN with an embedding and 7 expression logits, as FER2013 models ship."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                                   nn.Flatten(), nn.Linear(16, 16))
        self.head = nn.Linear(16, 7)

    def forward(self, x):
        features = self.trunk(x)
        return self.head(features), features


@pytest.fixture(scope="module")
def fer_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "fer.onnx"
    torch.manual_seed(0)
    model = _TwoHeads().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, 1, 48, 48),), str(path), dynamo=False,
                          input_names=["image"], output_names=["logits", "features"],
                          dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}, "features": {0: "n"}})
    return model, path


def test_a_grey_static_multi_output_model(fer_model):
    model, path = fer_model
    config = OnnxFaceConfig(output="features", mean=(128.0, 0, 0), std=(64.0, 1, 1))
    extractor = create("onnx", config=config, weights=path)
    assert extractor.outputs()["onnx"].shape == (16,)
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (100, 90, 3), dtype=np.uint8))
    x = extractor.preprocess(image)
    assert x.shape == (1, 48, 48)  # the model's own size and channels, not input_size 112
    grey = np.asarray(image.resize((48, 48), Image.BILINEAR).convert("L"), dtype=np.float32)
    np.testing.assert_allclose(x[0].numpy(), (grey - 128.0) / 64.0, rtol=1e-6, atol=1e-6)
    batch = torch.stack([x, x.flip(-1)])
    with torch.no_grad():
        expected = model(batch)[1]
    torch.testing.assert_close(extractor.forward(batch)["onnx"], expected, rtol=1e-4, atol=1e-5)
    logits = create("onnx", config=OnnxFaceConfig(output="logits"), weights=path)
    assert logits.outputs()["onnx"].shape == (7,)  # the first output: the default


def test_an_input_size_the_model_does_not_take_is_refused(fer_model):
    with pytest.raises(PipelineError, match="takes 48x48 input; configs.onnx.input_size is 64"):
        create("onnx", config=OnnxFaceConfig(input_size=64), weights=fer_model[1])
    with pytest.raises(PipelineError, match="no output 'nope'; it has logits, features"):
        create("onnx", config=OnnxFaceConfig(output="nope"), weights=fer_model[1])
