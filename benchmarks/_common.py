"""Shared by the speed benchmarks: the dlib-johns chips, and running a measurement twice — with the
machine's OpenBLAS settings as they are, and in a child process with them unset."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def johns_chips() -> tuple[np.ndarray, list[int]]:
    """The 55 dlib-johns chips and their identity indices (exits with a message when absent)."""
    import pyfacedlib as pfd
    from pyfacedlib.datasets import data_root

    root = data_root(Path(__file__).resolve().parents[1])
    files = sorted(p for p in (root / "dlib-johns").glob("*/*") if p.suffix.lower() in (".jpg", ".png"))
    if not files:
        sys.exit(f"dlib-johns chips not found under {root} (set PYFACEDLIB_DATA)")
    names = sorted({p.parent.name for p in files})
    return np.stack([pfd.load_image(p) for p in files]), [names.index(p.parent.name) for p in files]


def blas_env() -> dict:
    """The OpenBLAS variables as this process sees them."""
    return {k: os.environ.get(k) for k in BLAS_VARS}


def run_twice(script: str, child: bool, measure: Callable[[], dict], report: Callable[[dict, str], None],
              child_args: list[str]) -> None:
    """Measures here (machine settings) and in a child process of `script` with BLAS_VARS unset;
    in the child (child=True) prints the measurement as JSON instead."""
    result = measure()
    if child:
        print(json.dumps(result))
        return
    report(result, "machine settings as they are")
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    done = subprocess.run([sys.executable, script, "--child", *child_args], env=env, capture_output=True, text=True,
                          check=True)
    report(json.loads(done.stdout.strip().splitlines()[-1]), "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset")


def aligned_faces(paths: list[str], labels: list[str] | None = None):
    """FaceSet of the images through the chip cache (~/.cache/pyfacedlib/chips), default settings."""
    from pyfacedlib.chipcache import ChipCache, default_cache_dir

    return ChipCache(default_cache_dir()).faces(paths, labels)


def pair_chips(unique: list[str]) -> np.ndarray:
    """Chips of every pair image, in order (the default alignment falls back to a centred box, so
    only an unreadable file can be missing: that stops the benchmark)."""
    faces = aligned_faces(unique)
    if faces.skipped:
        sys.exit(f"unreadable pair images: {faces.skipped}")
    return faces.chips


def lfw_people() -> dict[str, list[str]]:
    """Every LFW person -> their photo paths, sorted (exits with a message when LFW is absent)."""
    from pyfacedlib.bench import default_lfw_dir

    images = default_lfw_dir() / "lfw-deepfunneled"
    if not images.is_dir():
        sys.exit(f"LFW not found at {images.parent} (set PYFACEDLIB_DATA)")
    return {p.name: sorted(str(f) for f in p.glob("*.jpg")) for p in sorted(images.iterdir()) if p.is_dir()}


def embedded(paths: list[str]) -> np.ndarray:
    """Descriptors (shipped model) of the images' chip-cache chips, in order; stops if one is missing."""
    import pyfacedlib as pfd

    faces = aligned_faces(paths)
    if faces.skipped:
        sys.exit(f"{len(faces.skipped)} images could not be aligned: {list(faces.skipped.items())[:3]}")
    return pfd.FaceEmbedder().embed_chips(faces.chips)


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the machine type."""
    import platform

    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.machine()


GEMM_SHAPE = (2048, 1024, 2304)  # m, n, k: a large conv-like GEMM, the machine's practical peak


def gemm_peak(threads: int, previous: float = 0.0) -> float:
    """The float32 GEMM peak in GFLOP/s (best of 5 after a warm-up, through the linked OpenBLAS),
    or `previous` when that was higher: this machine's speed drifts, so the benchmarks measure the
    peak before and after their own figures and keep the best (a percentage over 100 would
    otherwise say more about a slow moment than about the code)."""
    from pyfacedlib import _core

    return max(previous, round(_core.sgemm_gflops(*GEMM_SHAPE, threads, 5), 1))
