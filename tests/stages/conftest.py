"""Makes ``extract_fixtures`` importable by name here and in worker processes (spawned children
and dask workers inherit sys.path), whichever import mode pytest uses; and the real videos with
real speech (:mod:`real_audio`), built once per session."""

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(scope="session")
def real_speech(tmp_path_factory):
    """The real speech wav (:mod:`real_media`: pyannote.audio's sample, hash-checked), or a skip
    saying why in one line."""
    import real_media

    why = real_media.speech_missing()
    if why is not None:
        pytest.skip(why)
    return real_media.speech(tmp_path_factory.mktemp("real-speech"))


@pytest.fixture(scope="session")
def talking_videos(real_footage, real_speech, tmp_path_factory):
    """``{variant: path}``: carphone's real frames with the real speech, in every container,
    codec and audio case of :data:`real_audio.VARIANTS` (built once per session, ~1 s)."""
    import real_audio

    return real_audio.build(tmp_path_factory.mktemp("talking"), real_footage["carphone_pristine"],
                            real_speech)


@pytest.fixture(scope="session")
def shaped_videos(real_footage, tmp_path_factory):
    """``{variant: path}``: carphone's real frames in every rotation, frame rate, codec, pixel
    format and size of :data:`real_video.VARIANTS` (built once per session, a few seconds)."""
    import real_video

    return real_video.build(tmp_path_factory.mktemp("shaped"), real_footage["carphone_pristine"])
