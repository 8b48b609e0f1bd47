"""Make timm and torchaudio usable on a CPU-only torch, without touching a working GPU install.

Two facts about the pinned wheels (see requirements/torch-cpu.txt):

* torchvision 0.28.0 is the only release that pins torch 2.13.0 and it is a CUDA build. Its native
  ``_C.so`` needs ``libtorch_cuda``, fails to load on the CPU torch, and ``import torchvision`` then
  dies in ``_meta_registrations`` with "operator torchvision::nms does not exist". timm imports
  torchvision (``timm/layers/create_norm.py``), so timm would not import either.
  :func:`ensure_torchvision` defines the two operator schemas that module registers fake kernels
  for (``nms``, ``qnms``) *before* torchvision is first imported. Nothing in this project calls
  them; they only let the import finish. Where ``_C.so`` loads (a matching GPU or CPU build) it
  does nothing. It must run in every process that imports timm: the extractor modules call it at
  import time, so dask workers and pool processes get it with the first extractor they unpickle.

* torchaudio 2.11.0 ships CUDA extension libraries that raise ``OSError`` (``libc10_cuda.so``) at
  import on the CPU torch. Without them torchaudio falls back to pure-Python transforms, which is
  all we use (MelSpectrogram, AmplitudeToDB, resample). ``python -m pipeline.compat repair``
  (run by ``make setup``) removes those libraries, and only when the import actually fails that
  way on a CPU torch. Audio decoding never goes through torchaudio (its load/save need torchcodec);
  we use PyAV.

* A user's own script or notebook in the venv (``import timm``) does not call the shim.
  ``repair`` therefore also installs a startup hook (:func:`install_startup_hook`): a
  ``fer_pipeline_compat.pth`` in the venv's site-packages that imports a tiny meta-path finder
  (:mod:`pipeline._startup_hook`), which runs :func:`ensure_torchvision` right before
  torchvision is first imported. Interpreter start imports no torch for it.
"""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from pathlib import Path

_TORCHVISION_SCHEMAS = {
    "torchvision::nms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "torchvision::qnms": "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_torchvision_checked = False
HOOK_PTH = "fer_pipeline_compat.pth"  # the startup file in site-packages ...
HOOK_MODULE = "fer_pipeline_compat_hook"  # ... and the module its one line imports


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def ensure_torchvision() -> None:
    """Let ``import torchvision`` (and so ``import timm``) succeed on a CPU-only torch."""
    global _torchvision_checked
    if _torchvision_checked or "torchvision" in sys.modules:
        _torchvision_checked = True
        return
    _torchvision_checked = True
    import torch

    package = _package_dir("torchvision")
    if package is None:
        return  # not installed: the import will fail with its own clear message
    native = next(package.glob("_C*.so"), None) or next(package.glob("_C*.pyd"), None)
    if native is not None:
        try:
            torch.ops.load_library(str(native))
            return  # a working build: nothing to do
        except OSError:
            pass
    for qualname, schema in _TORCHVISION_SCHEMAS.items():
        namespace, op = qualname.split("::")
        if not hasattr(getattr(torch.ops, namespace), op):
            torch.library.define(qualname, schema)


def repair_torchaudio() -> str:
    """Remove torchaudio's CUDA extension libraries when they break its import on a CPU torch."""
    import torch

    error = _fresh_import_error("torchaudio.transforms")
    if error is None:
        return "torchaudio imports: nothing to repair"
    package = _package_dir("torchaudio")
    if torch.version.cuda is not None or package is None or "OSError" not in error:
        raise RuntimeError(f"torchaudio does not import and this repair does not apply: {error}")
    removed = sorted(p.name for p in (package / "lib").glob("*.so"))
    for name in removed:
        (package / "lib" / name).unlink()
    error = _fresh_import_error("torchaudio.transforms")
    if error is not None:
        raise RuntimeError(f"torchaudio still does not import after removing {removed}: {error}")
    return f"removed torchaudio's CUDA extension libraries {removed}; torchaudio.transforms imports"


def install_startup_hook(site_packages: str | Path | None = None) -> Path:
    """Write the startup hook (the ``.pth`` file and its module) into ``site_packages`` (default:
    this interpreter's, i.e. the venv's); returns the ``.pth`` path. Idempotent."""
    from pipeline import io

    target = Path(site_packages or sysconfig.get_paths()["purelib"])
    source = Path(__file__).with_name("_startup_hook.py").read_text(encoding="utf-8")
    io.write_text(target / f"{HOOK_MODULE}.py", source)
    return io.write_text(target / HOOK_PTH, f"import {HOOK_MODULE}\n")


def _fresh_import_error(module: str) -> str | None:
    """``import module`` in a fresh interpreter of this venv (with its startup hooks): the error
    text, or None."""
    import subprocess

    result = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True,
                            text=True)
    return None if result.returncode == 0 else (result.stderr.strip().splitlines() or ["?"])[-1]


def main(argv: list[str]) -> int:
    if argv[1:] != ["repair"]:
        print("usage: python -m pipeline.compat repair", file=sys.stderr)
        return 2
    print(repair_torchaudio())
    print(f"startup hook: {install_startup_hook()}")
    error = _fresh_import_error("timm")  # proves a user's own `import timm` works
    if error is not None:
        print(f"timm still does not import in a fresh interpreter: {error}", file=sys.stderr)
        return 1
    print("timm imports in a fresh interpreter")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
