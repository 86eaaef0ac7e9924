"""setuptools' build backend, plus the CUDA libraries a CUDA build needs in pip's build environment.

`PYFACEDLIB_CUDA=ON pip install ".[cuda]"` builds the CUDA module (_core_cuda) against cuDNN,
cuBLAS, cuRAND and cuSOLVER from PyPI wheels: pip installs them into the isolated build
environment only when this backend asks for them, i.e. when PYFACEDLIB_CUDA=ON. The same wheels
are the `cuda` extra, which the installed module loads at run time (its rpath points at them).
"""
from __future__ import annotations

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F401,F403  (the standard hooks, unchanged)

# Also the `cuda` extra in pyproject.toml (with nvidia-cuda-runtime for cudart at run time).
CUDA_BUILD_REQUIRES = [
    "nvidia-cudnn-cu13>=9.1,<10",
    "nvidia-cublas>=13,<14",
    "nvidia-curand>=10.4,<11",
    "nvidia-cusolver>=12,<13",
]


CUDA_SETTINGS = {"ON": "ON", "1": "ON", "TRUE": "ON", "YES": "ON",
                 "OFF": "OFF", "0": "OFF", "FALSE": "OFF", "NO": "OFF", "AUTO": "AUTO", "": "AUTO"}


def cuda_setting() -> str:
    """PYFACEDLIB_CUDA read the one way (this backend and setup.py): "ON", "OFF" or "AUTO" (unset).
    Anything else is an error, not a silent CPU-only build."""
    value = os.environ.get("PYFACEDLIB_CUDA", "")
    if value.strip().upper() not in CUDA_SETTINGS:
        raise ValueError(f"PYFACEDLIB_CUDA must be ON, OFF or AUTO, got {value!r}")
    return CUDA_SETTINGS[value.strip().upper()]


def _cuda_requested() -> bool:
    return cuda_setting() == "ON"


def get_requires_for_build_wheel(config_settings=None):
    """setuptools' requirements, plus the CUDA wheels when PYFACEDLIB_CUDA=ON."""
    extra = CUDA_BUILD_REQUIRES if _cuda_requested() else []
    return _setuptools.get_requires_for_build_wheel(config_settings) + extra


def get_requires_for_build_editable(config_settings=None):
    """setuptools' requirements, plus the CUDA wheels when PYFACEDLIB_CUDA=ON."""
    extra = CUDA_BUILD_REQUIRES if _cuda_requested() else []
    return _setuptools.get_requires_for_build_editable(config_settings) + extra
