"""Hostile images: a JPEG whose header claims a gigantic size skips its clip, not the run.

Pillow raises ``DecompressionBombError`` (not an ``OSError``) for a header claiming more than twice
``Image.MAX_IMAGE_PIXELS`` pixels; before it was caught, one such file aborted the whole
extraction with no file named and no run report written, even with ``--allow-skips``.
"""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
from PIL import Image

from extract_fixtures import make_dataset
from pipeline.data.media import MediaError, read_image
from stages.extract import ExtractConfig, run_extract


def bomb_jpeg(width: int = 65000, height: int = 65000) -> bytes:
    """A real 8x8 JPEG whose SOF0 header is patched to claim ``width`` x ``height`` pixels."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)  # after marker, length, precision
    return bytes(data)


def test_read_image_names_the_file_of_a_decompression_bomb(tmp_path):
    path = tmp_path / "00001.jpg"
    path.write_bytes(bomb_jpeg())
    with Image.open(io.BytesIO(bomb_jpeg(100, 100))) as probe:  # the patch really lands in the header
        assert probe.size == (100, 100)
    with pytest.raises(MediaError, match=r"00001\.jpg: refused to decode"):
        read_image(path)


def test_a_bomb_skips_its_clip_and_the_run_goes_on_with_a_report(tmp_path):
    manifests = make_dataset(tmp_path, n_clips=3, n_frames=8)
    bomb = tmp_path / "frames" / "clip01" / "00003.jpg"
    bomb.write_bytes(bomb_jpeg())
    config = ExtractConfig(extractors=["test_mean_colour"], allow_skips=True)
    result = run_extract(config, manifests, tmp_path / "f.zarr")
    assert result.ok and result.clips_done == 2
    (skip,) = result.skipped
    assert skip.clip_id == "clip01" and Path(skip.file) == bomb and "refused to decode" in skip.reason
    report = json.loads(Path(result.report).read_text())
    assert [s["clip_id"] for s in report["result"]["skipped"]] == ["clip01"]
