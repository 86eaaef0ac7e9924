"""Loads the compiled core (`_core`) after the BLAS library it links against, and the CUDA module.

`_core` is the CPU build and is always there. A CUDA build (PYFACEDLIB_CUDA=ON) adds `_core_cuda`:
the same C++ over dlib's CUDA backend. dlib's CUDA tensors need a GPU for every allocation, so the
CPU paths never go through it; `resolve_device(device)` picks one module explicitly.
"""
from __future__ import annotations

import ctypes
import importlib
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

DEVICES = ("auto", "cpu", "cuda")


def _preload_blas() -> None:
    # _core's rpath points at the installed scipy_openblas32 wheel; loading the library here by
    # path also covers in-place developer builds, where that relative rpath does not resolve.
    try:
        import scipy_openblas32
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ImportError("pyfacedlib needs the scipy-openblas32 package (pip install scipy-openblas32)") from exc
    lib = Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"
    if lib.exists():
        ctypes.CDLL(str(lib))


_preload_blas()

from . import _core  # noqa: E402

core = _core

CHIP_SIZE: int = core.CHIP_SIZE              # aligned face chips: CHIP_SIZE x CHIP_SIZE x 3 uint8 (cpp/chip.h)
DESCRIPTOR_SIZE: int = core.DESCRIPTOR_SIZE  # floats in a face descriptor

_cuda: dict[str, Any] = {}   # "module" and "error", filled on first use

# The `cuda` extra's libraries, in dependency order (soname prefixes in nvidia/cu13/lib and nvidia/cudnn/lib)
_CUDA_WHEEL_LIBRARIES = ("libcudart.so", "libnvJitLink.so", "libcublasLt.so", "libcublas.so", "libcusparse.so",
                         "libcurand.so", "libcusolver.so", "libcudnn.so")


def _preload_cuda_wheels() -> None:
    """Loads the nvidia-* wheels' libraries by path: the installed module's rpath finds them beside
    the package, this covers in-place builds; a library the wheels lack is left to the loader."""
    try:
        import nvidia
    except ImportError:
        return
    folders = [Path(p) / name / "lib" for p in nvidia.__path__ for name in ("cu13", "cudnn")]
    for stem in _CUDA_WHEEL_LIBRARIES:
        for folder in folders:
            found = sorted(folder.glob(stem + ".[0-9]*"))
            if found:
                ctypes.CDLL(str(found[0]), mode=ctypes.RTLD_GLOBAL)
                break


def _cuda_installed() -> bool:
    """Whether this installation holds a CUDA module (_core_cuda)."""
    return bool(list(Path(__file__).parent.glob("_core_cuda*.so")))


def _load_cuda() -> ModuleType:
    """Imports the CUDA module (after the cuda extra's libraries); ImportError/OSError when it cannot load."""
    _preload_cuda_wheels()
    return importlib.import_module(f"{__package__}._core_cuda")


def cuda_module() -> ModuleType | None:
    """The CUDA module, or None when this installation has none (or it cannot load: cuda_status says why)."""
    if not _cuda:
        _cuda["module"], _cuda["error"], _cuda["installed"] = None, "", _cuda_installed()
        if not _cuda["installed"]:
            _cuda["error"] = "this installation was built without CUDA (PYFACEDLIB_CUDA=ON pip install '.[cuda]')"
        else:
            try:
                _cuda["module"] = _load_cuda()
            except (ImportError, OSError) as exc:   # e.g. the cuda extra's libraries are not installed
                _cuda["error"] = (f"the CUDA module is installed but cannot load: {exc} "
                                  "(pip install 'pyfacedlib[cuda]' installs its libraries)")
    return _cuda["module"]


def cuda_status() -> dict[str, Any]:
    """{"built": bool, "error": why not usable, "runtime_version", "driver_version", "cudnn_version",
    "devices": [{"index", "name", "compute_capability", "memory_bytes", "multiprocessors"}], "device_error"}."""
    module = cuda_module()
    status: dict[str, Any] = {"built": module is not None, "error": _cuda["error"], "devices": []}
    if module is not None:
        status.update(module.cuda_runtime())
        status["detail"] = module.build_info()["cuda_detail"]
    return status


def resolve_device(device: str) -> tuple[str, ModuleType]:
    """("cpu", _core) or ("cuda", _core_cuda) for device "cpu" | "cuda" | "auto".

    "cuda" raises DeviceError when there is no CUDA module or no GPU. "auto" takes the GPU when
    there is one, else the CPU, and warns (RuntimeWarning) when a CUDA module is installed but cannot
    load or finds no GPU (a CPU fallback is never silent; a CPU-only build falls back quietly).
    """
    from .errors import DeviceError

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cpu":
        return "cpu", core
    module = cuda_module()
    if module is None:
        if device == "cuda":
            raise DeviceError(f"device='cuda': {_cuda['error']}")
        if _cuda.get("installed"):
            warnings.warn(f"device='auto': {_cuda['error']}; running on the CPU", RuntimeWarning, stacklevel=3)
        return "cpu", core
    status = cuda_status()
    if status["devices"]:
        return "cuda", module
    why = status["device_error"] or "the CUDA runtime reports 0 devices"
    if device == "cuda":
        raise DeviceError(f"device='cuda' needs an NVIDIA GPU: this CUDA build (CUDA {status['runtime_version']}, "
                          f"cuDNN {status['cudnn_version']}) found none ({why})")
    warnings.warn(f"device='auto': the CUDA module is installed but found no GPU ({why}); running on the CPU",
                  RuntimeWarning, stacklevel=3)
    return "cpu", core
