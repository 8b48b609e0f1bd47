"""The ``fer-pipeline`` console script: signal handlers first, then the (slow) imports.

Importing the command line (typer, torch, zarr, ...) takes about a second. A SIGINT in that time
used to end in a long import traceback, and a SIGTERM (a batch system's time limit, ``scancel``)
in a silent exit. This module imports only the standard library and installs handlers that say
in one line that the command stopped before it started; :func:`cli.main.main` then installs its
own (which say how to resume).
"""

from __future__ import annotations

import os
import signal
import sys

_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}
_NAMES = {signal.SIGINT: "interrupted", signal.SIGTERM: "terminated (SIGTERM)"}


def _while_starting(signum: int, frame: object) -> None:
    """Nothing has been done yet: say so and exit at once (no cleanup is needed)."""
    os.write(2, f"{_NAMES[signum]} while starting: nothing was done\n".encode())
    os._exit(_EXIT[signum])


def main() -> int:
    """Install the start-up handlers, import the app, run it."""
    for signum in _EXIT:
        if signal.getsignal(signum) is not signal.SIG_IGN:  # ignored (a background job): stays so
            signal.signal(signum, _while_starting)
    from cli.main import main as run

    code = run()
    # Past the command (interpreter shutdown): the usual behaviour again.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return code


if __name__ == "__main__":
    sys.exit(main())
