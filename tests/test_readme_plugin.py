"""The documented plug-in example works as written: its ``pyproject.toml`` lines and its module,
copied out of docs/plugins.md (moved there from the README), make a package that pip installs
(``--target``, no network) and whose
extractor ``extract -e NAME`` runs and ``extract --describe NAME`` lists."""

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _readme_blocks() -> tuple[str, str]:
    """The plug-in page's TOML block and Python block, as docs/plugins.md shows them."""
    text = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    section = text[text.index("**Plug-ins.**"):]
    toml = re.search(r"```toml\n(.*?)```", section, re.S).group(1)
    python = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    return toml, python


@pytest.mark.slow
def test_the_readme_plugin_example_installs_and_runs(tmp_path):
    toml, python = _readme_blocks()
    entry_points = tomllib.loads(toml)["project"]["entry-points"]["fer_pipeline.extractors"]
    ((name, module),) = entry_points.items()
    first_line = python.splitlines()[0]  # "# my_package/my_extractor.py": where the file goes
    relative = first_line.lstrip("# ").strip()
    assert relative.replace("/", ".").removesuffix(".py") == module

    source = tmp_path / "src"
    (source / relative).parent.mkdir(parents=True)
    (source / relative).write_text(python)
    (source / Path(relative).parent / "__init__.py").write_text("")
    (source / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "readme-plugin"\nversion = "0.1"\n\n' + toml)
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--no-build-isolation", "--target", str(site), str(source)],
                   check=True, capture_output=True, text=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True,
                              text=True, env=env, cwd=REPO)

    described = cli("extract", "--describe", name)
    assert described.returncode == 0, described.stdout + described.stderr
    assert f"configs.{name}.size" in described.stdout and "thumbnail side" in described.stdout

    sys.path.insert(0, str(REPO / "tests" / "stages"))
    from extract_fixtures import make_dataset

    manifests = make_dataset(tmp_path / "data", n_clips=1, n_frames=6, missing=())
    store = tmp_path / "f.zarr"
    ran = cli("extract", "--manifests", str(manifests), "--store", str(store), "-e", name,
              "--device", "cpu")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    import zarr

    group = zarr.open_group(str(store), mode="r")
    (clip,) = list(group["clips"].group_keys())
    assert group["clips"][clip][name].shape == (6, 3)


def test_an_entry_point_whose_module_registers_another_name_says_so(tmp_path, monkeypatch):
    """The README's old example named the entry point ``my_extractor`` and the class ``my_mean``:
    ``-e my_extractor`` ended in "error: 'my_extractor'"."""
    from pipeline.errors import PipelineError
    from pipeline import registry
    from pipeline.features import extractors

    (tmp_path / "misnamed_plugin.py").write_text(
        "import pipeline.features.extractors.swin  # noqa: F401 (registers swin)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "entry_points", lambda group: {"my_extractor": "misnamed_plugin"}
                        if group == extractors.ENTRY_POINT_GROUP else {})
    with pytest.raises(PipelineError, match=r"extractor 'my_extractor': module misnamed_plugin "
                                            r"\(entry point my_extractor .*registers no extractor"):
        extractors.extractor_class("my_extractor")
