"""Loads the compiled core (`_core`) after the BLAS library it links against."""
from __future__ import annotations

import ctypes
from pathlib import Path


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
