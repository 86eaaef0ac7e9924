"""Fine-tuning step speed, side by side in one run: the head fast path, and full-net steps on the
fast path (fast_con convolutions; frozen BN also data-parallel over replicas) against dlib's own
con_ + dnn_trainer (the reference), for the frozen-BN (affine) and the calibrated bn_con net; the
fast path with each convolution kernel this CPU runs (direct AVX-512 / AVX2 kernels, and im2col +
OpenBLAS GEMM, the path before them), alternated twice, best kept.

    python benchmarks/train_speed.py [--head-steps 2000] [--full-steps 6] [--threads N]

Mini-batches of 5 identities x 5 dlib-johns chips degraded to 10 px (so the loss, and every
gradient, is non-zero), no augmentation, so every step does the same work. Prints ms per step,
ratios, and for full-net steps GFLOP/s (a step of strategy "all" costs 3x the forward pass:
forward, data gradient, filter gradient) as a % of the float32 GEMM peak measured in the same run;
runs once with the machine's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE as they are and once (in a child
process) with them unset.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _common import blas_env, cpu_model, gemm_peak, johns_chips, run_twice


def measure(head_steps: int, full_steps: int, threads: int | None) -> dict:
    import pyfacedlib as pfd
    from pyfacedlib._finetune import HEAD_LEVEL
    from pyfacedlib._native import core

    johns, labels = johns_chips()
    chips = pfd.datasets.degrade(johns, "lowres:10")
    shipped = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    threads = threads or pfd.embedder.default_threads()

    def trainer(base: str, bn: bool, strategy: str, level: int, fast: bool = True, stop_backprop: bool = True):
        return core.FaceTrainer(base, bn, chips, labels, level, 1e-4, 5, 5, False, 1, 0, threads, fast, stop_backprop)

    def per_step(t, steps: int) -> float:
        t.train(1)  # warm-up (allocations)
        t.parameters()
        start = time.perf_counter()
        t.train(steps)
        t.parameters()  # waits for dnn_trainer's thread to finish queued steps
        return (time.perf_counter() - start) / steps

    result = {"cpu": cpu_model(), "openblas_env": blas_env(), "blas_core": pfd.build_info().get("blas_core"),
              "threads": threads, "gemm_peak_gflops": gemm_peak(threads),
              "step_gflop": 3 * 2 * pfd.FaceEmbedder()._core.multiply_adds_per_face * 25 / 1e9}
    start = time.perf_counter()
    head = trainer(shipped, False, "head", 6)
    result["head_feature_caching_s"] = time.perf_counter() - start
    result["head_ms"] = 1000 * per_step(head, head_steps)
    kernels = pfd.build_info()["conv_kernels"]
    result["conv_kernels"] = kernels
    result["affine_fast_ms_by_kernel"] = {k: float("inf") for k in kernels}
    for _ in range(2):   # alternated: this machine's speed drifts between minutes
        for k in kernels:
            core.set_training_conv_kernel(k)
            ms = 1000 * per_step(trainer(shipped, False, "all", 0), full_steps)
            result["affine_fast_ms_by_kernel"][k] = min(result["affine_fast_ms_by_kernel"][k], ms)
    core.set_training_conv_kernel("auto")
    result["affine_fast_ms"] = result["affine_fast_ms_by_kernel"][kernels[0]]
    result["affine_dlib_ms"] = 1000 * per_step(trainer(shipped, False, "all", 0, fast=False), full_steps)
    # from_level:K, frozen BN: back-propagation stopped at level K against computed through the frozen levels
    result["from_level_ms"] = {k: {"stopped": 1000 * per_step(trainer(shipped, False, f"from_level:{k}", k),
                                                              full_steps),
                                   "through": 1000 * per_step(trainer(shipped, False, f"from_level:{k}", k,
                                                                      stop_backprop=False), full_steps)}
                               for k in range(1, HEAD_LEVEL)}
    with tempfile.TemporaryDirectory() as tmp:
        bn = str(Path(tmp) / "bn.dat")
        pfd.convert_affine_to_bn(shipped, bn, calibration=chips)
        result["bn_fast_ms"] = 1000 * per_step(trainer(bn, True, "all", 0), full_steps)
        result["bn_dlib_ms"] = 1000 * per_step(trainer(bn, True, "all", 0, fast=False), full_steps)
    result["gemm_peak_gflops"] = gemm_peak(threads, result["gemm_peak_gflops"])   # before and after: the best
    return result


def report(r: dict, label: str) -> None:
    print(f"--- {label}: {r['cpu']}, OPENBLAS env {r['openblas_env']}, OpenBLAS kernel {r['blas_core']}, "
          f"{r['threads']} threads, 25 faces per step")
    def rate(ms: float) -> str:
        gflops = r["step_gflop"] / (ms / 1000)
        return f"{gflops:6.1f} GFLOP/s, {100 * gflops / r['gemm_peak_gflops']:4.1f}% of peak"

    print(f"  float32 GEMM peak {r['gemm_peak_gflops']:.1f} GFLOP/s; a full-net step = {r['step_gflop']:.1f} GFLOP")
    print(f"  head fast path (cached features)      {r['head_ms']:9.3f} ms/step  "
          f"(caching once: {r['head_feature_caching_s']:.1f} s)")
    for i, (k, ms) in enumerate(r["affine_fast_ms_by_kernel"].items()):
        label = f"pyfacedlib, {k:<6}" + ("*" if i == 0 else " ")
        print(f"  full net, frozen BN: {label:<17}{ms:9.1f} ms/step   ({rate(ms)})")
    print(f"  full net, frozen BN: dlib dnn_trainer {r['affine_dlib_ms']:9.1f} ms/step   "
          f"({rate(r['affine_dlib_ms'])})  -> {r['affine_dlib_ms'] / r['affine_fast_ms']:.2f}x")
    print(f"  full net, bn_con:    pyfacedlib       {r['bn_fast_ms']:9.1f} ms/step   ({rate(r['bn_fast_ms'])})")
    print(f"  full net, bn_con:    dlib dnn_trainer {r['bn_dlib_ms']:9.1f} ms/step   ({rate(r['bn_dlib_ms'])})  "
          f"-> {r['bn_dlib_ms'] / r['bn_fast_ms']:.2f}x")
    print(f"  (* the default convolution kernel, used in every other row; "
          f"{r['affine_fast_ms_by_kernel']['blas'] / r['affine_fast_ms']:.2f}x the blas kernel's step)")
    print(f"  head vs full frozen-BN step: {r['affine_fast_ms'] / r['head_ms']:,.0f}x")
    print("  from_level:K, frozen BN, pyfacedlib: back-propagation stopped at level K / through the frozen levels")
    for k, t in r["from_level_ms"].items():
        print(f"    K={k}: {t['stopped']:7.1f} ms / {t['through']:7.1f} ms  "
              f"-> saves {100 * (1 - t['stopped'] / t['through']):4.1f}%")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-steps", type=int, default=2000)
    parser.add_argument("--full-steps", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    child_args = ["--head-steps", str(args.head_steps), "--full-steps", str(args.full_steps)] + (
        ["--threads", str(args.threads)] if args.threads else [])
    run_twice(__file__, args.child, lambda: measure(args.head_steps, args.full_steps, args.threads), report, child_args)


if __name__ == "__main__":
    main()
