"""The MTCNN weights: three state dicts (``pnet.pt``, ``rnet.pt``, ``onet.pt``) read from
facenet-pytorch's wheel on PyPI (or from a folder holding the three files), each checked against
its sha256 before it is loaded.

The wheel is fetched by ``make faces-weights`` (``pip download --no-deps``: the package itself is
never installed: its pins want torch <= 2.3) into ``.cache/faces/`` of the checkout. The weights
are facenet-pytorch's conversion of the original MTCNN models (Zhang et al. 2016), MIT licence.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

from pipeline.errors import PipelineError

WHEEL_VERSION = "2.6.0"
WHEEL_NAME = f"facenet_pytorch-{WHEEL_VERSION}-py3-none-any.whl"
# sha256 of each state dict as facenet-pytorch 2.6.0 ships it (facenet_pytorch/data/<name>.pt).
SHA256 = {
    "pnet": "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
    "rnet": "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
    "onet": "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
}
ENV = "FER_FACE_WEIGHTS"  # a wheel or a folder, used when no path is given
CACHE = Path(__file__).resolve().parents[3] / ".cache" / "faces"  # where `make faces-weights` puts it


class WeightsError(PipelineError):
    """Missing or altered detector weights: the message names the file and the reason."""


def default_path() -> Path:
    """``$FER_FACE_WEIGHTS`` if set, else the wheel in the checkout's ``.cache/faces/``."""
    return Path(os.environ[ENV]) if os.environ.get(ENV) else CACHE / WHEEL_NAME


def _read(path: Path) -> dict[str, bytes]:
    """The three files' bytes from a wheel (zip) or a folder."""
    if not path.exists():
        raise WeightsError(f"{path}: no such file or folder (run `make faces-weights`, or pass "
                           f"the facenet-pytorch {WHEEL_VERSION} wheel or a folder with "
                           "pnet.pt, rnet.pt and onet.pt)")
    blobs = {}
    if path.is_dir():
        for name in SHA256:
            file = path / f"{name}.pt"
            if not file.is_file():
                raise WeightsError(f"{file}: missing")
            blobs[name] = file.read_bytes()
        return blobs
    try:
        with zipfile.ZipFile(path) as wheel:
            for name in SHA256:
                blobs[name] = wheel.read(f"facenet_pytorch/data/{name}.pt")
    except (zipfile.BadZipFile, KeyError, OSError) as e:
        raise WeightsError(f"{path}: not a facenet-pytorch wheel with MTCNN weights ({e})") from None
    return blobs


def load_state_dicts(path: str | Path | None = None) -> dict[str, dict]:
    """``{"pnet": state_dict, "rnet": ..., "onet": ...}``, each verified by sha256 first."""
    import torch

    path = Path(path) if path else default_path()
    state_dicts = {}
    for name, blob in _read(path).items():
        digest = hashlib.sha256(blob).hexdigest()
        if digest != SHA256[name]:
            raise WeightsError(f"{path}: {name}.pt has sha256 {digest[:16]}..., expected "
                               f"{SHA256[name][:16]}... (facenet-pytorch {WHEEL_VERSION})")
        # weights_only: a state dict of tensors, nothing executable.
        state_dicts[name] = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    return state_dicts


def fingerprint() -> str:
    """What identifies these weights in a run record."""
    return "mtcnn:" + hashlib.sha256("".join(SHA256[n] for n in sorted(SHA256)).encode()).hexdigest()[:16]
