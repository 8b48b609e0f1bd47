"""Issue 31's identity test: a pipeline bundled from the demo's runs and ensemble, applied with
``predict`` to the demo's test clips, gives stage three's decisions on every frame: the labels of
``submission.txt`` and the probabilities of ``final_test.npz``.

The demo is built small here (8 clips of 16 frames), with the cheapest extractors (timm's
``test_vit``, log-mel, the TDNN), two cheap heads (``image`` on the face features, with an AU output, and ``audio``
on the TDNN windows) and an ensemble that keeps every step (fill, mean smoothing with the confidence
fallback, biases: ``--no-nested``, selection ``best``), so that every decision is exercised.
"""

import json

import numpy as np
import pytest

import small_bundle
from cli.main import main
from pipeline.runs.predictions import Predictions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    data, manifests, _, scores, pipeline = small_bundle.build(
        root, image_options=["--set", 'head.tasks=["expr", "au", "va"]'],  # AU, VA outputs
        ensemble_options=["--no-nested", "--windows", "3,5", "--set", "selection=best",
                          "--set", "fallback=true"])
    return root, data, manifests, scores, pipeline


def test_predict_on_the_test_clips_gives_stage_threes_final_decisions(demo):
    root, data, manifests, scores, pipeline = demo
    test_clips = [json.loads(line)["clip_id"]
                  for line in (manifests / "test.jsonl").read_text().splitlines()]
    choices = json.loads((scores / "scores.json").read_text())["tuning"]["test"]["choices"]
    assert choices["combiner"] != "image/main" and choices["steps"]  # an ensemble, steps kept
    out = root / "predicted"
    crops = [str(data / "cropped_aligned" / clip) for clip in test_clips]
    assert main(["predict", *crops, "--videos", str(data / "videos"), "--pipeline",
                 str(pipeline), "--out", str(out)]) == 0

    import pandas as pd

    submitted = {}
    for line in (scores / "submission.txt").read_text().splitlines()[1:]:
        location, label = line.split(",")
        submitted[location] = int(label)
    va_submitted = {line.split(",")[0]: [float(v) for v in line.split(",")[1:]]
                    for line in (scores / "submission_va.txt").read_text().splitlines()[1:]}
    bundle = json.loads((pipeline / "bundle.json").read_text())
    assert bundle["va_heads"] == ["image/va"] and bundle["va_decisions"]["weights"] == [[1, 1]]
    final = Predictions(scores / "final_test.npz")
    for clip in test_clips:
        table = pd.read_parquet(out / f"{clip}.parquet")
        labels = {f"{clip}/{f:05d}.jpg": int(v) for f, v in zip(table["frame"], table["label"])}
        assert labels == {k: v for k, v in submitted.items() if k.startswith(f"{clip}/")}
        probs = table[["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness",
                       "Surprise", "Other"]].to_numpy()
        np.testing.assert_array_equal(probs, final[clip])
        summary = json.loads((out / f"{clip}.json").read_text())
        assert summary["frames"] == len(table) and summary["segments"]
        assert set(table.loc[~table["face"], "faceless_rule"]) <= {"nearest_face", "audio"}
        assert (table.loc[table["face"], "faceless_rule"] == "").all()
        aus = table[["AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23", "AU24",
                     "AU25", "AU26"]].to_numpy()  # the image head's AU output
        assert aus.shape == (len(table), 12) and ((aus > 0) & (aus < 1)).all()
        # VA: stage three's VA submission (the image head's output, smoothed with the windows
        # the ensemble fitted), frame by frame
        np.testing.assert_allclose(table[["valence", "arousal"]].to_numpy(),
                                   [va_submitted[f"{clip}/{f:05d}.jpg"] for f in table["frame"]],
                                   atol=1e-6)


def test_the_python_api_returns_the_table_and_a_rerun_resumes(demo):
    """``Pipeline.load(P).predict(...)`` is the CLI's table as a DataFrame; with a named store
    the features are reused, and a second run into the same folder redoes nothing."""
    from stages.predict import Pipeline, run_predict

    root, data, manifests, scores, pipeline = demo
    clip = json.loads((manifests / "test.jsonl").read_text().splitlines()[0])["clip_id"]
    crops = data / "cropped_aligned" / clip
    out, store = root / "api", root / "api-store.zarr"
    table = Pipeline.load(pipeline).predict(crops, out=out, videos=data / "videos", store=store)
    assert list(table.columns[:3]) == ["frame", "time", "face"] and len(table) > 0
    final = Predictions(scores / "final_test.npz")[clip]
    np.testing.assert_array_equal(table[["Neutral", "Anger", "Disgust", "Fear", "Happiness",
                                         "Sadness", "Surprise", "Other"]].to_numpy(), final)
    again = run_predict([crops], pipeline, out, store=store, videos=data / "videos")
    assert again.reused == [clip] and again.frames == 0


def test_a_single_run_bundles_alone_and_predicts_its_own_test_predictions(demo, capsys):
    """A bundle of one run applies that run's primary output with no post-processing: predict
    gives the probabilities the run wrote for its test clips (faceless frames filled by the
    head's own nearest-face rule and marked so)."""
    import pandas as pd

    root, data, manifests, scores, pipeline = demo
    single = root / "single"
    assert main(["bundle", str(root / "runs" / "image"), "--out", str(single)]) == 0
    assert "RANDOM WEIGHTS" in capsys.readouterr().err
    assert "RANDOM WEIGHTS" in (single / "MODEL_CARD.md").read_text()
    clip = json.loads((manifests / "test.jsonl").read_text().splitlines()[0])["clip_id"]
    out = root / "single-out"
    assert main(["predict", str(data / "cropped_aligned" / clip), "--videos", str(data / "videos"),
                 "--pipeline", str(single), "--out", str(out)]) == 0
    table = pd.read_parquet(out / f"{clip}.parquet")
    written = Predictions(root / "runs" / "image" / "predictions" / "test" / "main.npz")[clip]
    np.testing.assert_array_equal(table.iloc[:, 8:16].to_numpy(), written)
    assert (table.loc[~table["face"], "faceless_rule"] == "nearest_face").all()


@pytest.mark.skipif(not __import__("pipeline.data.faces.weights", fromlist=["x"]).default_path()
                    .exists(), reason="MTCNN weights absent (`make faces-weights`)")
def test_predict_on_raw_video_of_a_real_face_in_other_containers(demo, capsys):
    """Raw video through ``faces`` and the rest: a real person's photo (matplotlib's Grace Hopper)
    moving, leaving the picture and coming back, as .mkv at 30 fps without audio and .mov at 15
    fps with audio. One row per decoded frame; frames without a face are marked with their
    rule; the boxes are the face step's (video pixels, near the true box)."""
    import pandas as pd

    from pipeline.data.faces.synthetic import moving_face
    from pipeline.data.faces.track import iou
    from pipeline.data.media import probe_video, write_video

    root, data, manifests, scores, pipeline = demo
    videos = root / "raw"
    face = moving_face(40)
    write_video(videos / "hopper_silent.mkv", face.frames, 30)
    tone = np.sin(np.arange(int(16000 * 40 / 15)) * 0.05).astype(np.float32) * 0.1
    write_video(videos / "hopper_sound.mov", face.frames, 15, tone, 16000)
    out = root / "raw-out"
    # the silent video alone first: no clip of the store has audio arrays (the audio head's
    # inputs are zeros); then the folder, where it is complete already
    assert main(["predict", str(videos / "hopper_silent.mkv"), "--pipeline", str(pipeline),
                 "--out", str(out)]) == 0
    assert main(["predict", str(videos), "--pipeline", str(pipeline), "--out", str(out)]) == 0
    assert "1 complete already" in capsys.readouterr().out
    for name in ("hopper_silent", "hopper_sound"):
        info = probe_video(next(videos.glob(f"{name}.*")))
        table = pd.read_parquet(out / f"{name}.parquet")
        assert len(table) == info.n_frames == 40
        assert table["time"].iloc[1] == pytest.approx(1 / info.fps)
        found = table["face"].to_numpy()
        assert 0 < found.sum() < len(table)  # the face leaves the picture
        assert (table.loc[~found, "faceless_rule"] != "").all()
        boxes = table[["box_x1", "box_y1", "box_x2", "box_y2"]].to_numpy()
        assert all(iou(face.boxes[i], boxes[i]) > 0.5 for i in np.flatnonzero(found))
        assert np.isnan(boxes[~found]).all()


@pytest.mark.skipif(not __import__("pipeline.data.faces.weights", fromlist=["x"]).default_path()
                    .exists(), reason="MTCNN weights absent (`make faces-weights`)")
def test_predict_on_real_footage_of_a_real_man_talking(demo, real_footage, tmp_path):
    """``predict VIDEO --pipeline BUNDLE --out OUT`` on the "carphone" sequence (a real man
    talking in a car: 120 frames at 30000/1001 fps, H.264 with B-frames, no audio track): one row
    per frame at that frame rate, a face on (nearly) every one, sane probabilities."""
    import pandas as pd

    root, data, manifests, scores, pipeline = demo
    video = real_footage["carphone_pristine"]
    out = tmp_path / "predicted"
    assert main(["predict", str(video), "--pipeline", str(pipeline), "--out", str(out)]) == 0
    table = pd.read_parquet(out / "carphone_pristine.parquet")
    assert list(table["frame"]) == list(range(1, 121))
    np.testing.assert_allclose(table["time"], np.arange(120) * 1001 / 30000, atol=1e-6)
    assert table["face"].sum() >= 114  # 120 of 120 measured
    classes = ["Neutral", "Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise", "Other"]
    probs = table[classes].to_numpy()
    assert np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-4)
    assert table["label"].between(0, 7).all()
    assert (table["expression"] == [classes[i] for i in table["label"]]).all()
    assert (table.loc[table["face"], "faceless_rule"] == "").all()
    boxes = table.loc[table["face"], ["box_x1", "box_y1", "box_x2", "box_y2"]].to_numpy()
    assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 2] - boxes[:, 0]).max() < 66
    summary = json.loads((out / "carphone_pristine.json").read_text())
    assert summary["frames"] == 120
