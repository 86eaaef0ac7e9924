"""Embedding throughput: pyfacedlib vs dlib's own Python binding (dlib-bin), side by side.

    python benchmarks/embed_speed.py [--faces 128] [--repeats 3] [--threads N]

Runs twice: once with the machine's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as they are, and once
(in a child process) with them unset, so OpenBLAS picks its kernel for the real CPU. Prints faces/s,
the ratio to dlib-bin, the network's GFLOP/s and a float32 GEMM reference measured in the same run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GFLOP_PER_FACE = 0.542  # 270.9 M multiply-adds per 150x150 chip
BLAS_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def load_chips(count: int) -> np.ndarray:
    import pyfacedlib as pfd

    root = Path(os.environ.get("PYFACEDLIB_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    files = sorted(p for p in (root / "dlib-johns").glob("*/*") if p.suffix.lower() in (".jpg", ".png"))
    if not files:
        sys.exit(f"dlib-johns chips not found under {root} (set PYFACEDLIB_DATA)")
    chips = np.stack([pfd.load_image(p) for p in files])
    return chips[np.arange(count) % len(chips)]


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def gemm_gflops(threads: int) -> float:
    """float32 GEMM rate of numpy's OpenBLAS at a conv-like shape (a reference for the machine)."""
    a = np.random.default_rng(0).standard_normal((2048, 2304), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((2304, 1024), dtype=np.float32)
    seconds = best_seconds(lambda: a @ b, 5)
    return 2 * 2048 * 2304 * 1024 / seconds / 1e9


def measure(faces: int, repeats: int, threads: int | None) -> dict:
    import dlib

    import pyfacedlib as pfd

    chips = load_chips(faces)
    embedder = pfd.FaceEmbedder(threads=threads)
    ours = best_seconds(lambda: embedder.embed_chips(chips), repeats)
    reference = dlib.face_recognition_model_v1(pfd.models.path("dlib_face_recognition_resnet_model_v1"))
    ref_chips = list(chips[: min(faces, 32)])
    theirs = best_seconds(lambda: reference.compute_face_descriptor(ref_chips), 1)
    ours_fps = faces / ours
    dlib_fps = len(ref_chips) / theirs
    info = pfd.build_info()
    return {
        "openblas_env": {k: os.environ.get(k) for k in BLAS_VARS},
        "blas_core": info.get("blas_core"),
        "threads": embedder.threads,
        "faces": faces,
        "pyfacedlib_faces_per_s": round(ours_fps, 1),
        "pyfacedlib_gflops": round(ours_fps * GFLOP_PER_FACE, 1),
        "dlib_bin_faces_per_s": round(dlib_fps, 2),
        "ratio_vs_dlib_bin": round(ours_fps / dlib_fps, 1),
        "numpy_sgemm_gflops": round(gemm_gflops(embedder.threads), 1),
    }


def report(result: dict, label: str) -> None:
    print(f"--- {label}: OPENBLAS env {result['openblas_env']}, OpenBLAS kernel {result['blas_core']}, "
          f"{result['threads']} threads, {result['faces']} faces")
    print(f"  pyfacedlib  {result['pyfacedlib_faces_per_s']:8.1f} faces/s  ({result['pyfacedlib_gflops']} GFLOP/s)")
    print(f"  dlib-bin    {result['dlib_bin_faces_per_s']:8.2f} faces/s")
    print(f"  ratio       {result['ratio_vs_dlib_bin']:8.1f}x")
    print(f"  numpy sgemm {result['numpy_sgemm_gflops']:8.1f} GFLOP/s (reference for this machine)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    result = measure(args.faces, args.repeats, args.threads)
    if args.child:
        print(json.dumps(result))
        return
    report(result, "machine settings as they are")
    env = {k: v for k, v in os.environ.items() if k not in BLAS_VARS}
    command = [sys.executable, __file__, "--child", "--faces", str(args.faces), "--repeats", str(args.repeats)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    child = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    report(json.loads(child.stdout.strip().splitlines()[-1]), "OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE unset")


if __name__ == "__main__":
    main()
