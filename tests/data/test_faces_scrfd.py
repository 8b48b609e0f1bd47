"""The SCRFD ONNX path: a generated ONNX file whose outputs place known faces in insightface's
SCRFD layout (constants; the image only flows through a zero-weighted mean) is decoded to those
faces in frame pixels (letterbox scale undone, the weaker duplicate suppressed, the low score
dropped), runs through ``faces``, and a file of another layout is refused in one line."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from pipeline.data.faces.config import FacesConfig
from pipeline.data.faces.scrfd import SCRFD
from pipeline.data.faces.weights import WeightsError
from pipeline.data.media import write_video
from stages.faces import run_faces

SIDE = 64  # the model's fixed input: strides 8, 16, 32 give 8x8, 4x4, 2x2 cells, 2 anchors each


def _outputs():
    counts = {8: 128, 16: 32, 32: 8}
    scores = {s: np.zeros((k, 1), np.float32) for s, k in counts.items()}
    boxes = {s: np.ones((k, 4), np.float32) for s, k in counts.items()}
    points = {s: np.zeros((k, 10), np.float32) for s, k in counts.items()}
    # The face: stride 16, cell row 1, col 2, its second anchor -> index (1 * 4 + 2) * 2 + 1,
    # centred on (32, 16); box 16..56 x 8..48 in input pixels.
    scores[16][13] = 0.9
    boxes[16][13] = [1.0, 0.5, 1.5, 2.0]
    points[16][13] = np.array([[-0.5, -0.25], [0.5, -0.25], [0.0, 0.5], [-0.4, 1.2], [0.4, 1.2]]).reshape(-1)
    # A weaker duplicate at stride 32 (cell 0, col 1, first anchor: centre (32, 0)): suppressed.
    scores[32][2] = 0.8
    boxes[32][2] = [15 / 32, -9 / 32, 23 / 32, 47 / 32]
    scores[8][0] = 0.3  # under the threshold
    return [scores[s] for s in counts] + [boxes[s] for s in counts] + [points[s] for s in counts]


def _model(path, outputs):
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"])]
    inits = [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])]
    graph_outputs = []
    for k, value in enumerate(outputs):
        inits.append(helper.make_tensor(f"c{k}", TensorProto.FLOAT, value.shape, value.reshape(-1).tolist()))
        nodes.append(helper.make_node("Add", [f"c{k}", "nothing"], [f"out{k}"]))
        graph_outputs.append(helper.make_tensor_value_info(f"out{k}", TensorProto.FLOAT, value.shape))
    graph = helper.make_graph(nodes, "scrfd_like", [helper.make_tensor_value_info(
        "input.1", TensorProto.FLOAT, [1, 3, SIDE, SIDE])], graph_outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_outputs_decode_to_the_faces_they_place(tmp_path):
    detector = SCRFD(_model(tmp_path / "det.onnx", _outputs()))
    frame = np.zeros((96, 128, 3), np.uint8)  # scaled by 0.5 into the 64x64 input
    (face,) = detector.detect(frame)[0]
    np.testing.assert_allclose(face.box, [32, 16, 112, 96], atol=1e-4)
    expected = (np.array([32.0, 16.0]) + np.array([[-0.5, -0.25], [0.5, -0.25], [0.0, 0.5],
                                                   [-0.4, 1.2], [0.4, 1.2]]) * 16) * 2
    np.testing.assert_allclose(face.landmarks, expected, atol=1e-4)
    assert face.score == pytest.approx(0.9)


def test_other_layouts_and_files_are_refused(tmp_path):
    with pytest.raises(WeightsError, match="6 outputs.*9 or 15"):
        SCRFD(_model(tmp_path / "nokps.onnx", _outputs()[:6]))
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(WeightsError, match="junk.onnx: not a loadable ONNX model"):
        SCRFD(tmp_path / "junk.onnx")


def test_faces_runs_with_an_onnx_detector(tmp_path):
    write_video(tmp_path / "v.mp4", np.full((5, 96, 128, 3), 100, np.uint8), 10.0)
    config = FacesConfig(detector="scrfd", onnx=str(_model(tmp_path / "det.onnx", _outputs())))
    result = run_faces([tmp_path / "v.mp4"], tmp_path / "out", config)
    assert result.outcomes[0].clips == {"v": 5}
    with np.load(tmp_path / "out" / "faces" / "v.npz") as q:
        np.testing.assert_allclose(q["box"], np.tile([32, 16, 112, 96], (5, 1)), atol=1e-4)
    assert run_faces([tmp_path / "v.mp4"], tmp_path / "out", config).outcomes[0].status == "reused"
