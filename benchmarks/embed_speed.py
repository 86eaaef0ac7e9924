"""Embedding throughput, side by side in one run: pyfacedlib's folded forward pass with each
convolution kernel this CPU runs (direct AVX-512 / AVX2 kernels, and im2col + OpenBLAS GEMM, the
path before them), pyfacedlib running dlib's own forward pass (the reference path), the model
exported to ONNX and run in onnxruntime on the CPU (FaceEmbedder(backend="onnx"), when onnxruntime
is installed), and dlib's Python binding (dlib-bin).

    python benchmarks/embed_speed.py [--faces 256] [--repeats 3] [--threads N]

Prints faces/s, GFLOP/s (0.542 GFLOP per face, counted from the net's op list), the percentage of
the float32 GEMM peak measured in the same run with the same BLAS and thread count, and ratios.
Runs once with the machine's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as they are and once (in a child
process) with them unset, so OpenBLAS picks its kernel for the real CPU.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
from _common import GEMM_SHAPE, blas_env, cpu_model, gemm_peak, johns_chips, run_twice


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def measure(faces: int, repeats: int, threads: int | None) -> dict:
    import dlib

    import pyfacedlib as pfd
    johns, _ = johns_chips()
    chips = johns[np.arange(faces) % len(johns)]
    folded = pfd.FaceEmbedder(threads=threads, backend="folded", device="cpu")
    reference_path = pfd.FaceEmbedder(threads=threads, backend="dlib", device="cpu")
    gflop_per_face = 2 * folded._core.multiply_adds_per_face / 1e9
    kernels = pfd.build_info()["conv_kernels"]
    result = {
        "cpu": cpu_model(),
        "openblas_env": blas_env(),
        "blas_core": pfd.build_info().get("blas_core"),
        "threads": folded.threads,
        "faces": faces,
        "gflop_per_face": round(gflop_per_face, 4),
        "conv_kernels": kernels,
        "gemm_peak_gflops": gemm_peak(folded.threads),
    }
    reference = reference_path.embed_chips(chips[:32])
    for kernel in kernels:
        folded.conv_kernel = kernel
        result[f"max_abs_diff_{kernel}_vs_dlib_path"] = float(np.abs(folded.embed_chips(chips[:32]) - reference).max())
        result[f"folded_{kernel}_faces_per_s"] = faces / best_seconds(lambda: folded.embed_chips(chips), repeats)
    result["folded_faces_per_s"] = result[f"folded_{kernels[0]}_faces_per_s"]   # the default kernel
    result["dlib_path_faces_per_s"] = faces / best_seconds(lambda: reference_path.embed_chips(chips), repeats)
    try:
        import onnxruntime

        on_onnx = pfd.FaceEmbedder(threads=threads, backend="onnx", device="cpu")
        result["onnxruntime_version"] = onnxruntime.__version__
        result["max_abs_diff_onnx_vs_dlib_path"] = float(np.abs(on_onnx.embed_chips(chips[:32]) - reference).max())
        result["onnx_faces_per_s"] = faces / best_seconds(lambda: on_onnx.embed_chips(chips), repeats)
    except ImportError as missing:
        result["onnx_skipped"] = str(missing)
    binding = dlib.face_recognition_model_v1(pfd.models.path("dlib_face_recognition_resnet_model_v1"))
    few = list(chips[:32])
    result["dlib_bin_faces_per_s"] = len(few) / best_seconds(lambda: binding.compute_face_descriptor(few), 1)
    result["gemm_peak_gflops"] = gemm_peak(folded.threads, result["gemm_peak_gflops"])   # before and after: the best
    paths = [f"folded_{k}" for k in kernels] + ["folded", "dlib_path", "dlib_bin"] + (
        ["onnx"] if "onnx_faces_per_s" in result else [])
    for key in paths:
        fps = result[f"{key}_faces_per_s"]
        result[f"{key}_gflops"] = round(fps * gflop_per_face, 1)
        result[f"{key}_pct_of_peak"] = round(100 * fps * gflop_per_face / result["gemm_peak_gflops"], 1)
        result[f"{key}_faces_per_s"] = round(fps, 1)
    result["folded_vs_dlib_path"] = round(result["folded_faces_per_s"] / result["dlib_path_faces_per_s"], 2)
    result["folded_vs_dlib_bin"] = round(result["folded_faces_per_s"] / result["dlib_bin_faces_per_s"], 1)
    result["folded_vs_blas_kernel"] = round(result["folded_faces_per_s"] / result["folded_blas_faces_per_s"], 2)
    if "onnx_faces_per_s" in result:
        result["folded_vs_onnx"] = round(result["folded_faces_per_s"] / result["onnx_faces_per_s"], 2)
    return result


def report(r: dict, label: str) -> None:
    print(f"--- {label}: {r['cpu']}, OPENBLAS env {r['openblas_env']}, OpenBLAS kernel {r['blas_core']}, "
          f"{r['threads']} threads, {r['faces']} faces, {r['gflop_per_face']} GFLOP/face")
    print(f"  float32 GEMM peak (m,n,k={GEMM_SHAPE}) {r['gemm_peak_gflops']:7.1f} GFLOP/s")
    print(f"  {'path':<40}{'faces/s':>9}{'GFLOP/s':>9}{'% peak':>8}{'max |diff| vs dlib':>20}")
    rows = [(f"folded_{k}", f"pyfacedlib folded, {k} kernel" + (" (default)" if i == 0 else ""),
             f"{r[f'max_abs_diff_{k}_vs_dlib_path']:.2e}") for i, k in enumerate(r["conv_kernels"])]
    rows += [("dlib_path", "pyfacedlib dlib forward", "reference"),
             ("dlib_bin", "dlib-bin compute_face_descriptor", "")]
    if "onnx_faces_per_s" in r:
        rows.insert(-1, ("onnx", f"onnxruntime {r['onnxruntime_version']} CPU (backend onnx)",
                         f"{r['max_abs_diff_onnx_vs_dlib_path']:.2e}"))
    for key, name, diff in rows:
        print(f"  {name:<40}{r[f'{key}_faces_per_s']:9.1f}{r[f'{key}_gflops']:9.1f}"
              f"{r[f'{key}_pct_of_peak']:8.1f}{diff:>20}")
    print(f"  ratios: default / blas kernel {r['folded_vs_blas_kernel']}x, "
          f"folded / dlib forward {r['folded_vs_dlib_path']}x, folded / dlib-bin {r['folded_vs_dlib_bin']}x"
          + (f", folded / onnxruntime {r['folded_vs_onnx']}x" if "folded_vs_onnx" in r
             else f"; onnxruntime skipped: {r.get('onnx_skipped')}"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    child_args = (["--faces", str(args.faces), "--repeats", str(args.repeats)]
                  + (["--threads", str(args.threads)] if args.threads else []))
    run_twice(__file__, args.child, lambda: measure(args.faces, args.repeats, args.threads), report, child_args)


if __name__ == "__main__":
    main()
