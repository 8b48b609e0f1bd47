"""Progress within a clip: extraction reports frames as batches run, not only when a clip ends,
so that a batch log (not a terminal) gets its line every FER_PROGRESS_SECONDS during a long clip."""

import re

from extract_fixtures import make_dataset
from pipeline.features.config import ExtractConfig
from stages.extract import run_extract

FRAMES = 40


def test_frames_advance_within_one_clip(tmp_path):
    manifests = make_dataset(tmp_path / "data", n_clips=1, n_frames=FRAMES, missing=())
    events = []
    config = ExtractConfig(extractors=["test_mean_colour"], batch_size=4, device="cpu",
                           loader_threads=1, prefetch=2)
    run_extract(config, manifests, tmp_path / "f.zarr", events.append)
    frames = [e for e in events if e.task == "extracting frames"]
    assert frames[0].total == FRAMES
    advances = [e.advance for e in frames if e.advance]
    assert sum(advances) == FRAMES  # exactly the total, however it was split
    assert len(advances) >= FRAMES // 4 - 1, advances  # about one event per batch, not one per clip
    running = [e.info["clips"] for e in frames if e.advance][:-1]
    assert running and set(running) == {"0/1"}  # those came before the clip ended


def test_a_batch_log_prints_lines_within_a_clip(tmp_path, capsys, monkeypatch):
    from cli.main import main

    manifests = make_dataset(tmp_path / "data", n_clips=1, n_frames=FRAMES, missing=())
    monkeypatch.setenv("FER_PROGRESS_SECONDS", "0")  # a line per event (the default: 30 s)
    assert main(["extract", "--manifests", str(manifests), "--store", str(tmp_path / "f.zarr"),
                 "-e", "test_mean_colour", "--batch-size", "4", "--device", "cpu",
                 "--loader-threads", "1"]) == 0
    err = capsys.readouterr().err  # not a terminal here: log lines, no bar
    done = [int(m) for m in re.findall(rf"extracting frames (\d+)/{FRAMES}", err)]
    assert done[-1] == FRAMES
    assert [d for d in done if 0 < d < FRAMES], err  # lines while the one clip ran


def test_pool_workers_relay_frames_within_a_clip(tmp_path):
    """With a process pool the frames of a running clip reach the stage too (through a queue),
    not only each clip's end; the advances still add up to the total exactly."""
    manifests = make_dataset(tmp_path / "data", n_clips=2, n_frames=FRAMES, missing=())
    events = []
    config = ExtractConfig(extractors=["test_mean_colour"], batch_size=4, device="cpu",
                           loader_threads=1, prefetch=2, scheduler="processes:2")
    assert run_extract(config, manifests, tmp_path / "f.zarr", events.append).ok
    frames = [e for e in events if e.task == "extracting frames"]
    assert frames[0].total == 2 * FRAMES
    advances = [e.advance for e in frames if e.advance]
    assert sum(advances) == 2 * FRAMES
    # Before: one advance of FRAMES per clip, at its end. Now: parts of a clip before it ends.
    within = [e.advance for e in frames if e.advance and e.info["clips"] != "2/2" and e.advance < FRAMES]
    assert len(advances) > 2 and within, advances
