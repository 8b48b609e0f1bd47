"""The venv's startup hook: a user's own ``import timm`` works in a fresh interpreter on a
CPU-only torch, and interpreter start imports no torch for it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.compat import HOOK_MODULE, HOOK_PTH, install_startup_hook

REPO = Path(__file__).resolve().parents[1]


def _python(code: str, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.mark.slow  # two fresh interpreters import torch and timm (10-25 s)
def test_fresh_interpreter_imports_timm_with_the_hook(tmp_path):
    pth = install_startup_hook(tmp_path)
    assert pth == tmp_path / HOOK_PTH and (tmp_path / f"{HOOK_MODULE}.py").is_file()
    assert install_startup_hook(tmp_path) == pth  # idempotent
    # site.addsitedir processes the directory's .pth files as interpreter start does for the venv
    hooked = _python(
        "import site, sys\n"
        f"site.addsitedir({str(tmp_path)!r})\n"
        "assert 'torch' not in sys.modules, 'the hook imported torch at start'\n"
        "import timm, torchvision\n"
        "print('ok', timm.create_model('resnet18', pretrained=False, num_classes=3).num_classes)\n")
    assert hooked.returncode == 0, hooked.stderr[-2000:]
    assert hooked.stdout.split() == ["ok", "3"]
    # without it, what the hook is for: on the CPU torch of requirements/torch-cpu.txt, timm fails.
    # The project's venv has the hook installed (make setup), so the control run skips site's .pth
    # processing (-S) and puts the site-packages folders on the path by hand.
    folders = [p for p in sys.path if p.endswith("site-packages")]
    plain = _python(f"import sys; sys.path.extend({folders!r}); import timm", "-S")
    if plain.returncode == 0:
        pytest.skip("torchvision's native library loads here: nothing for the hook to fix")
    assert "torchvision::nms does not exist" in plain.stderr


def test_hook_finder_only_acts_on_torchvision(monkeypatch):
    import importlib

    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # restored after the test
    hook = importlib.import_module("pipeline._startup_hook")  # (importing it installs it)
    sys.meta_path[:] = [hook.TorchvisionShim, *(f for f in sys.meta_path
                                                if f is not hook.TorchvisionShim)]
    calls = []
    monkeypatch.setattr("pipeline.compat.ensure_torchvision", lambda: calls.append(1))
    assert hook.TorchvisionShim.find_spec("numpy") is None and not calls
    assert hook.TorchvisionShim.find_spec("torchvision") is None and calls == [1]
    assert hook.TorchvisionShim not in sys.meta_path  # removed after its one use
