"""``onnx``: a tiny IResNet exported with ``torch.onnx.export`` gives, through onnxruntime, the same
features as the torch ``iresnet`` extractor on the same weights (float32 rounding: rtol/atol 1e-4
of the features' scale).
"""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.errors import PipelineError
from pipeline.features.extractors import create
from pipeline.features.extractors.iresnet import LAYERS, IResNet, IResNetConfig
from pipeline.features.extractors.onnx_face import OnnxFaceConfig

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")  # torch.onnx.export writes through it


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("onnx")
    torch.manual_seed(4)
    model = IResNet(LAYERS[18])  # the smallest insightface depth
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    model.eval()
    torch.save(model.state_dict(), folder / "backbone.pth")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 3, 112, 112),), str(folder / "r18.onnx"),
                          dynamo=False, input_names=["input.1"], output_names=["embedding"],
                          dynamic_axes={"input.1": {0: "batch"}, "embedding": {0: "batch"}})
    return folder


def faces(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)) for _ in range(n)]


def test_onnx_iresnet_equals_the_torch_extractor(exported):
    onnx = create("onnx", weights=exported / "r18.onnx")
    torch_ext = create("iresnet", config=IResNetConfig(depth=18), weights=exported / "backbone.pth")
    assert onnx.outputs()["onnx"].shape == (512,)
    pics = faces(3)
    x_onnx = torch.stack([onnx.preprocess(p) for p in pics])
    x_torch = torch.stack([torch_ext.preprocess(p) for p in pics])
    torch.testing.assert_close(x_onnx, x_torch, rtol=1e-6, atol=1e-6)  # same [-1, 1] scaling
    out = onnx.forward(x_onnx)["onnx"]
    expected = torch_ext.forward(x_torch)["iresnet"]
    scale = expected.abs().max().item()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4 * scale)


def test_onnx_options_and_errors(exported, tmp_path):
    bgr = create("onnx", config=OnnxFaceConfig(channels="BGR", mean=(0, 0, 0), std=(255, 255, 255)),
                 weights=exported / "r18.onnx")
    pixels = np.asarray(faces(1)[0], dtype=np.float32)
    np.testing.assert_allclose(bgr.preprocess(faces(1)[0]).numpy(),
                               (pixels[..., ::-1] / 255).transpose(2, 0, 1), atol=1e-6)
    with pytest.raises(PipelineError, match="needs --weights"):
        create("onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(PipelineError, match="bad.onnx: not a runnable ONNX model"):
        create("onnx", weights=tmp_path / "bad.onnx")
    with pytest.raises(PipelineError, match="no output 'nope'"):
        create("onnx", config=OnnxFaceConfig(output="nope"), weights=exported / "r18.onnx")


def test_iresnet_file_of_another_depth_names_the_fix(exported):
    with pytest.raises(PipelineError) as error:
        create("iresnet", config=IResNetConfig(depth=50), weights=exported / "backbone.pth").load()
    message = str(error.value)
    assert message.endswith("this is an IResNet-18, not 50 (unexpected block counts (2, 2, 2, 2)): "
                            "add --set configs.iresnet.depth=18")
    assert "\n" not in message
