"""docs/raw-video.md's route, as written there: ``faces`` -> ``manifest`` -> ``extract`` on a folder of
raw real-photo videos (.mov with audio that ends 2 s early, .mkv of a group) with no annotations."""

import re
import shlex
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from pipeline.data.faces import weights
from pipeline.data.faces.synthetic import group, moving_face
from pipeline.data.manifest import load_clips
from pipeline.data.media import write_video
from pipeline.features.store import FeatureStore

DOC = Path(__file__).resolve().parents[2] / "docs" / "raw-video.md"


def route_commands() -> list[list[str]]:
    """The ``fer-pipeline`` lines of the doc's first code block, split as a shell would."""
    block = re.search(r"```\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    return [shlex.split(line.split("#")[0])[1:] for line in block.splitlines()
            if line.startswith("fer-pipeline ")]


@pytest.mark.skipif(not weights.default_path().exists(), reason="MTCNN weights: `make faces-weights`")
def test_the_documented_route_runs_on_unlabelled_raw_videos(tmp_path, capsys):
    import extract_fixtures  # noqa: F401  (registers test_mean_colour)

    videos, raw = tmp_path / "my videos", tmp_path / "raw"
    rate = 16000
    t = np.arange(2 * rate) / rate  # 2 s of sound for a 4 s video
    write_video(videos / "talk.mov", moving_face(40, 160, 120).frames, 10.0,
                (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate)
    write_video(videos / "team.mkv", group(10).frames, 10.0,
                (0.2 * np.sin(2 * np.pi * 330 * np.arange(rate) / rate)).astype(np.float32), rate)
    commands = route_commands()
    assert [c[0] for c in commands] == ["faces", "manifest", "extract"]
    for command in commands:
        args = [a.replace("~/videos", str(videos)).replace("~/raw", str(raw)) for a in command]
        if args[0] == "extract":  # tiny backbones instead of swin/tdnn: seconds, not minutes
            args = [a for a in args if a not in ("-e", "swin", "logmel", "tdnn")]
            args += ["-e", "test_mean_colour", "-e", "logmel", "--device", "cpu"]
        assert main(args) == 0, (args, capsys.readouterr())
    printed = capsys.readouterr().out
    clips = {c.clip_id: c for c in load_clips(raw / "manifests")}
    assert set(clips) == {"talk_t1", "talk_t2", "team_t1", "team_t2", "team_t3", "team_t4"}
    assert all(c.split == "test" and c.labels is None for c in clips.values())
    # referenced where they are: nothing copied under the root
    assert clips["talk_t1"].video_path == str(videos / "talk.mov")
    assert not list(raw.rglob("*.mov")) and not list(raw.rglob("*.mkv"))
    assert clips["talk_t1"].n_frames == 40 and clips["team_t1"].n_frames == 10
    # short audio: every face kept, audio masked past 2 s, one line each
    store = FeatureStore(raw / "features.zarr")
    for clip_id in ("talk_t1", "talk_t2"):
        audio = store.read(clip_id, "audio_valid")
        assert audio[:20].all() and not audio[20:].any()
        assert f"short audio {clip_id}: " in printed
    assert "team_t1" in store.clip_ids() and "audio_valid" not in store.array_names("team_t1")
