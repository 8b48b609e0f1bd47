"""Progress in a batch log (stderr not a terminal): plain lines every N seconds, not a rich bar."""

import io

from rich.console import Console

from cli._common import LogLines, progress_bar
from pipeline.progress import ProgressEvent


def _console(terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=200), buffer


def test_lines_every_interval_with_rate_and_eta():
    console, buffer = _console(terminal=False)
    now = [100.0]
    log = LogLines(console, interval=30, clock=lambda: now[0])
    log(ProgressEvent("extracting frames", total=1000, info={"clips": "0/10"}))
    for step in range(10):  # a clip of 100 frames every 10 s
        now[0] += 10
        log(ProgressEvent("extracting frames", advance=100,
                          info={"clips": f"{step + 1}/10", "frames/s": 10.0}))
    lines = buffer.getvalue().splitlines()
    # the start, then every 30 s (30, 60, 90 s), then completion at 100 s
    assert len(lines) == 5, lines
    assert lines[0] == "[0:00:00] extracting frames 0/1000 (0%)  clips 0/10"
    assert lines[1] == ("[0:00:30] extracting frames 300/1000 (30%)  10/s  ETA 0:01:10  "
                        "clips 3/10  frames/s 10")
    assert lines[2].startswith("[0:01:00] extracting frames 600/1000 (60%)  10/s  ETA 0:00:40")
    assert lines[-1].startswith("[0:01:40] extracting frames 1000/1000 (100%)  10/s  ETA 0:00:00")
    assert "\x1b[" not in buffer.getvalue()  # no terminal control codes in a log


def test_progress_bar_picks_lines_for_a_log_and_a_bar_for_a_terminal(monkeypatch):
    monkeypatch.setenv("FER_PROGRESS_SECONDS", "0")
    console, buffer = _console(terminal=False)
    with progress_bar(console) as progress:
        assert isinstance(progress, LogLines)
        progress(ProgressEvent("epochs", total=2))
        progress(ProgressEvent("epochs", advance=1))
        progress(ProgressEvent("epochs", advance=1))
    assert [line.split("] ")[1].split("  ")[0] for line in buffer.getvalue().splitlines()] == [
        "epochs 0/2 (0%)", "epochs 1/2 (50%)", "epochs 2/2 (100%)"]
    terminal, _ = _console(terminal=True)
    with progress_bar(terminal) as progress:
        assert not isinstance(progress, LogLines)


def test_a_task_that_starts_again_counts_from_zero():
    """A bag trains its members one after another, each announcing its own "epochs" total."""
    console, buffer = _console(terminal=False)
    now = [0.0]
    log = LogLines(console, interval=0, clock=lambda: now[0])
    for member in range(2):
        log(ProgressEvent("epochs", total=3))
        for _ in range(2):  # early stop after 2 of 3 epochs
            now[0] += 1
            log(ProgressEvent("epochs", advance=1))
    lines = buffer.getvalue().splitlines()
    assert [line.split()[2] for line in lines] == ["0/3", "1/3", "2/3", "0/3", "1/3", "2/3"]


def test_a_quiet_task_still_gets_a_line_every_interval():
    """No event for a while (one long batch, a dask shard still running): the heartbeat prints
    the task's state, saying how long nothing advanced; finished tasks stay quiet."""
    console, buffer = _console(terminal=False)
    now = [0.0]
    log = LogLines(console, interval=30, clock=lambda: now[0])
    log(ProgressEvent("extracting frames", total=100))
    now[0] = 10
    log(ProgressEvent("extracting frames", advance=20))
    now[0] = 29
    log.heartbeat()  # not due yet
    now[0] = 31
    log.heartbeat()
    now[0] = 50
    log.heartbeat()  # printed 19 s ago: not due
    now[0] = 62
    log.heartbeat()
    lines = buffer.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert lines[1].startswith("[0:00:31] extracting frames 20/100 (20%)")
    assert lines[1].endswith("(no change for 0:00:21)")
    assert lines[2].startswith("[0:01:02]") and lines[2].endswith("(no change for 0:00:52)")
    log(ProgressEvent("extracting frames", advance=80))  # done: a line, then silence
    now[0] = 200
    log.heartbeat()
    assert len(buffer.getvalue().splitlines()) == 4


def test_the_heartbeat_runs_by_itself_in_a_batch_log(monkeypatch):
    import time

    monkeypatch.setenv("FER_PROGRESS_SECONDS", "0.05")
    console, buffer = _console(terminal=False)
    with progress_bar(console) as progress:
        progress(ProgressEvent("training", total=3))
        time.sleep(0.5)  # no event at all meanwhile
    assert "(no change for" in buffer.getvalue()
