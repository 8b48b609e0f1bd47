"""``fer-pipeline manifest``: the table, the repair and rejection lines, exit codes and files."""

import json

from cli.main import main
from pipeline.data.dataset import read_dataset
from pipeline.data.manifest import SPLITS, load_clips

from .layout import clean_layout, layout, write_annotation  # noqa: F401 (fixtures)


def run(capsys, *args):
    code = main(["manifest", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_clean_dataset(layout, tmp_path, capsys):
    out_dir = tmp_path / "manifests"
    code, out, err = run(capsys, layout.root, "--out", out_dir)
    assert code == 0, err
    assert load_clips(out_dir) == [c for s in SPLITS for c in read_dataset(layout.root).clips[s]]
    report = json.loads((out_dir / "report.json").read_text())
    assert report["counts"]["train"]["clips"] == 3
    for row in ("clips", "frames", "faces", "Neutral", "Other", "unlabelled"):
        assert row in out
    assert "68" in out and "Repaired" not in out and "Rejected" not in out


def test_rejections_fail_unless_allowed(layout, tmp_path, capsys):
    layout.val("vid3").write_bytes(b"no header\n1\n")
    write_annotation(layout.train("vid1"), layout.labels["vid1"][:18])
    out_dir = tmp_path / "manifests"
    code, out, err = run(capsys, layout.root, "--out", out_dir)
    assert code == 1
    assert f"vid3: {layout.val('vid3')}: line 1: header 'no header' is not" in out
    assert f"vid1: {layout.train('vid1')}: 18 labels for 20 video frames" in out
    assert "Repaired (1)" in out and "Rejected (1)" in out
    error_lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "1 clip(s) rejected" in error_lines[0]
    assert "no manifests written: pass --allow-skips" in error_lines[0]
    # Exit 1 writes no manifests (issue 23): only the report, naming what was rejected.
    assert sorted(p.name for p in out_dir.iterdir()) == ["report.json"]
    report = json.loads((out_dir / "report.json").read_text())
    assert report["rejected"] == {"bad_annotation": 1}
    assert report["rejections"][0] == {"clip": "vid3", "file": str(layout.val("vid3")),
                                       "kind": "bad_annotation",
                                       "reason": "line 1: header 'no header' is not "
                                                 "'Neutral,Anger,Disgust,Fear,Happiness,Sadness,"
                                                 "Surprise,Other'"}
    code, out, _ = run(capsys, layout.root, "--out", out_dir, "--allow-skips")
    assert code == 0 and "manifests and report written to" in out
    # The manifests of what could be read, without the rejected clip.
    assert [c.clip_id for c in load_clips(out_dir, ["val"])] == []
    assert len(load_clips(out_dir, ["train"])) == 3


def test_paths_with_brackets_are_printed_verbatim(layout, tmp_path, capsys):
    odd = layout.annotations / "Train_Set" / "[bold]x.txt"
    write_annotation(odd, [0, 1])
    code, out, _ = run(capsys, layout.root, "--out", tmp_path / "m", "--allow-skips")
    assert code == 0 and "[bold]x: " in out


def test_test_list_option(layout, tmp_path, capsys):
    names = tmp_path / "my_names.txt"
    names.write_text("vid4\n")
    layout.test_list.unlink()
    code, out, _ = run(capsys, layout.root, "--out", tmp_path / "a")
    assert code == 0 and "no test list found" in out
    assert load_clips(tmp_path / "a", ["test"]) == []
    code, _, _ = run(capsys, layout.root, "--out", tmp_path / "b", "--test-list", names)
    assert code == 0 and [c.clip_id for c in load_clips(tmp_path / "b", ["test"])] == ["vid4"]


def test_unusable_root_is_one_line(tmp_path, capsys):
    code, _, err = run(capsys, tmp_path / "nope", "--out", tmp_path / "m")
    assert code == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[0] == f"error: {tmp_path / 'nope'}: no such dataset folder"
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, tmp_path / "empty", "--out", tmp_path / "m")
    assert code == 1 and "no annotation folder" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
