"""A signal while the command is still starting (importing typer, torch, zarr: about a second)
ends in one line and the usual exit code, not an import traceback (SIGINT) or a silent death
(SIGTERM) (issue 23, point 9). The imports are made slow on purpose (a finder that sleeps
before ``typer`` loads), so that the signal surely lands in them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SLOW_START = """
import sys, time
class SlowImports:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "typer":
            time.sleep(30)
        return None
sys.meta_path.insert(0, SlowImports)
from cli.entry import main  # the console script's entry point
raise SystemExit(main())
"""


def _catches(pid: int, signum: int) -> bool:
    """True once ``pid`` has a handler for ``signum`` (``SigCgt`` in /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) >> (signum - 1) & 1)
    return False


@pytest.mark.parametrize("signum, code, message", [
    (signal.SIGINT, 130, "interrupted while starting: nothing was done"),
    (signal.SIGTERM, 143, "terminated (SIGTERM) while starting: nothing was done"),
])
def test_signal_while_starting_is_one_line(signum, code, message):
    child = subprocess.Popen([sys.executable, "-c", SLOW_START, "extract", "--help"],
                             env={**os.environ, "PYTHONPATH": str(ROOT)},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not _catches(child.pid, signal.SIGTERM):  # the start-up handlers are in place
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.01)
        child.send_signal(signum)
        out, err = child.communicate(timeout=30)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == code, err
    assert err.splitlines() == [message] and out == ""


def test_the_console_script_starts_through_the_entry_module():
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fer-pipeline"] == "cli.entry:main"
    done = subprocess.run([sys.executable, "-c", "from cli.entry import main; raise SystemExit(main())",
                           "--version"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("fer-pipeline "), done.stderr
