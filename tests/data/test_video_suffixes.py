"""One list of video suffixes for the whole project: what `faces` reads, `manifest` finds too."""

from pipeline.data import discover
from stages import faces


def test_manifest_finds_every_format_faces_reads(tmp_path):
    assert faces.VIDEO_SUFFIXES is discover.VIDEO_SUFFIXES
    for name in ("a.mp4", "b.avi", "c.mkv", "d.MOV", "e.webm", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    found = discover.find_videos([tmp_path])
    assert sorted(found) == ["a", "b", "c", "d", "e"]
    # a test list naming a .mov file names its clip
    listing = tmp_path / "test_set.txt"
    listing.write_text("d.mov\nbatch1/e.webm\n")
    assert [name for _, name in discover.read_test_list(listing)] == ["d", "e"]
