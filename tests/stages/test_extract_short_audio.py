"""A truncated video whose index is at the front decodes only part of its audio, without an error:
extraction must treat the short track as bad input (issue 23, point 2), not pad it."""

from pathlib import Path

import av
import numpy as np

from extract_fixtures import TINY_LOGMEL, TINY_TDNN, make_dataset  # noqa: F401 (registers test_mean_colour)
from pipeline.data.media import decode_audio, decode_audio_track, probe_video, short_audio
from pipeline.features.config import ExtractConfig
from pipeline.features.store import FeatureStore
from stages.extract import run_extract


def faststart(path: Path) -> None:
    """Remux ``path`` in place with its index (moov) before the data, as web videos are."""
    moved = path.with_suffix(".faststart.mp4")
    with av.open(str(path)) as src, av.open(str(moved), "w", options={"movflags": "faststart"}) as dst:
        streams = {s.index: dst.add_stream_from_template(s) for s in src.streams}
        for packet in src.demux():
            if packet.dts is None:  # the demuxer's flush packets
                continue
            packet.stream = streams[packet.stream.index]
            dst.mux(packet)
    moved.replace(path)


def truncate(path: Path, fraction: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def _config(**kwargs) -> ExtractConfig:
    return ExtractConfig(extractors=["logmel", "tdnn"], batch_size=8, audio_stride=3, device="cpu",
                         configs={"tdnn": dict(TINY_TDNN), "logmel": dict(TINY_LOGMEL)}, **kwargs)


def test_a_front_indexed_truncated_video_is_bad_input(tmp_path):
    manifests = make_dataset(tmp_path, n_clips=3, n_frames=40, fps=10.0)
    videos = tmp_path / "videos"
    for name in ("clip01.mp4", "clip02.mp4"):
        faststart(videos / name)
    cut = videos / "clip01.mp4"
    assert cut.read_bytes()[:64].find(b"moov") > 0  # the index is at the front
    truncate(cut, 0.5)
    # What made it slip through: the index still says 40 frames, the audio decodes without an
    # error, only about half of it.
    assert probe_video(cut).n_frames == 40
    assert 0.3 < len(decode_audio(cut, 16000)) / (4.0 * 16000) < 0.7

    result = run_extract(_config(), manifests, tmp_path / "f.zarr")
    assert not result.ok and result.clips_done == 2  # clip02: front-indexed and whole, accepted
    (skip,) = result.skipped
    assert skip.clip_id == "clip01" and skip.file == str(cut)
    assert "audio track ends at" in skip.reason and "truncated" in skip.reason
    assert "\n" not in str(skip)
    store = FeatureStore(tmp_path / "f.zarr")
    names = store.array_names("clip01") if "clip01" in store.clip_ids() else []
    assert all(store.marker("clip01", n) is None for n in names)  # nothing of it is complete
    allowed = run_extract(_config(allow_skips=True), manifests, tmp_path / "f.zarr")
    assert allowed.ok and [s.clip_id for s in allowed.skipped] == ["clip01"]
    # A source whose audio ends early on purpose: a larger tolerance takes the clip.
    tolerant = run_extract(_config(audio_short_tolerance=3.0), manifests, tmp_path / "f.zarr")
    assert tolerant.ok and not tolerant.skipped and tolerant.clips_done == 1


def test_the_tolerance_is_one_video_frame_and_one_codec_frame(tmp_path):
    # 40 frames at 10 fps: 4 s; tolerance 0.1 s + 1024 / 16000 s (AAC) = 0.164 s.
    rate, aac = 16000, 1024 / 16000
    assert short_audio(int((4.0 - 0.16) * rate), rate, 40, 10.0, aac) is None
    reason = short_audio(int((4.0 - 0.17) * rate), rate, 40, 10.0, aac)
    assert reason is not None and "3.83 s" in reason and "tolerance 0.164 s" in reason
    assert short_audio(4 * rate + 512, rate, 40, 10.0, aac) is None  # longer is fine
    assert short_audio(int((4.0 - 0.17) * rate), rate, 40, 10.0, aac, extra=0.01) is None
    # The codec frame comes from the file: make_dataset writes 16 kHz AAC.
    manifests = make_dataset(tmp_path, n_clips=1, n_frames=10, fps=10.0)
    samples, frame_seconds = decode_audio_track(manifests.parent / "videos" / "clip00.mp4", rate)
    assert frame_seconds == aac and samples.dtype == np.float32


def _photo_clip(root: Path, n_frames: int = 40, fps: float = 10.0, audio_seconds: float = 2.0):
    """A real file: frames of a real photograph (matplotlib's Grace Hopper) as an mp4 whose AAC
    track ends ``audio_seconds`` in (before the video's n_frames / fps), with its face crops."""
    from PIL import Image

    from pipeline.data.faces.synthetic import moving_face
    from pipeline.data.manifest import Clip, write_manifest
    from pipeline.data.media import write_video

    video = moving_face(n_frames, 160, 120)
    rate = 16000
    t = np.arange(int(audio_seconds * rate)) / rate
    path = root / "videos" / "speaker.mp4"
    write_video(path, video.frames, fps, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    frames_dir = root / "frames" / "speaker"
    frames_dir.mkdir(parents=True)
    for i, frame in enumerate(video.frames):
        Image.fromarray(frame[:64, :64]).save(frames_dir / f"{i + 1:05d}.jpg", quality=90)
    clip = Clip(clip_id="speaker", split="test", video_id="speaker", n_frames=n_frames, fps=fps,
                frames_dir=str(frames_dir), video_path=str(path), audio_path=str(path), labels=None)
    write_manifest(root / "manifests" / "test.jsonl", [clip])
    return root / "manifests", path


def test_audio_ending_two_seconds_early_keeps_every_face_and_masks_its_audio(tmp_path):
    from pipeline.data.manifest import load_clips
    from pipeline.fusion.data import FeatureRequest, check_inputs, concat, read_clip

    manifests, path = _photo_clip(tmp_path)
    with av.open(str(path)) as container:  # a whole file: every declared video frame decodes
        assert container.streams.video[0].frames == 40
        assert sum(1 for _ in container.decode(video=0)) == 40
    config = ExtractConfig(extractors=["test_mean_colour", "logmel", "tdnn"], batch_size=8,
                           audio_stride=3, device="cpu",
                           configs={"tdnn": dict(TINY_TDNN), "logmel": dict(TINY_LOGMEL)})
    result = run_extract(config, manifests, tmp_path / "f.zarr")
    assert result.ok and not result.skipped and result.clips_done == 1
    (note,) = result.notes  # one line names the shortfall
    assert note.startswith("speaker: ") and "audio ends at 2.0" in note and "4.00 s" in note
    assert "last 20 of 40 frames" in note and "\n" not in note
    store = FeatureStore(tmp_path / "f.zarr")
    assert store.read("speaker", "valid").all()  # every face kept
    audio_valid = store.read("speaker", "audio_valid")
    assert audio_valid[:20].all() and not audio_valid[20:].any()
    request = FeatureRequest(arrays=("test_mean_colour", "tdnn_w4"), audio=("tdnn_w4",))
    clips = load_clips(manifests)
    dims = check_inputs(store, clips, request)
    table = concat([read_clip(store, c, request, dims, train=False) for c in clips])
    assert table.valid.all() and table.audio[:20].all() and not table.audio[20:].any()
    assert not table.arrays["tdnn_w4"][20:].any() and table.arrays["tdnn_w4"][:20].any()
    assert table.arrays["test_mean_colour"][20:].any()  # the faces' features are untouched

