"""The root command: help, version, and the one-line error contract (traceback only with --debug)."""

import subprocess
import sys

from cli.main import main


def test_help_lists_every_stage_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("demo-data", "manifest", "finetune", "extract", "store", "fuse", "ensemble", "score",
                    "submission"):
        assert command in out, command


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "fer-pipeline 0.1.0"


def test_unknown_command_is_a_usage_error(capsys):
    assert main(["no-such-command"]) == 2
    assert "No such command" in capsys.readouterr().err


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True)


def test_error_is_one_line_without_traceback(tmp_path):
    missing = tmp_path / "nowhere"
    result = _run("manifest", str(missing), "--out", str(tmp_path / "m"))
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error:") and str(missing) in lines[0]


def test_debug_shows_the_traceback(tmp_path):
    result = _run("--debug", "manifest", str(tmp_path / "nowhere"), "--out", str(tmp_path / "m"))
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_help_imports_neither_matplotlib_nor_torch():
    code = ("import sys; from cli.main import app; import typer.main; typer.main.get_command(app);"
            " print('matplotlib' in sys.modules, 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
