"""Makes ``extract_fixtures`` importable by name here and in worker processes (spawned children
and dask workers inherit sys.path), whichever import mode pytest uses."""

import sys
from pathlib import Path

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)
