"""Fine-tuning step speed: the head fast path vs full-net steps, side by side in one run.

    python benchmarks/train_speed.py [--head-steps 2000] [--full-steps 5] [--threads N]

Mini-batches of 5 identities x 5 dlib-johns chips (no augmentation, so every step does the same
work). Prints seconds per step for: the head on cached features; the whole affine net (frozen BN,
strategy all); the whole calibrated bn net (strategy all); and the ratio.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import pyfacedlib as pfd
from pyfacedlib._native import core


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--head-steps", type=int, default=2000)
    parser.add_argument("--full-steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    root = Path(os.environ.get("PYFACEDLIB_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    files = sorted(p for p in (root / "dlib-johns").glob("*/*") if p.suffix.lower() in (".jpg", ".png"))
    chips = np.stack([pfd.load_image(p) for p in files])
    labels = [sorted({p.parent.name for p in files}).index(p.parent.name) for p in files]
    shipped = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    threads = args.threads or pfd.embedder.default_threads()

    def per_step(trainer, steps: int) -> float:
        trainer.train(1)  # warm-up (allocations)
        start = time.perf_counter()
        trainer.train(steps)
        trainer.parameters()  # waits for dnn_trainer's thread to finish the queued steps
        return (time.perf_counter() - start) / steps

    t = time.perf_counter()
    head = core.FaceTrainer(shipped, False, chips, labels, "head", 6, 0.01, 5, 5, False, 1, 0, threads)
    caching = time.perf_counter() - t
    head_step = per_step(head, args.head_steps)
    full_affine = per_step(core.FaceTrainer(shipped, False, chips, labels, "all", 0, 1e-5, 5, 5, False, 1, 0, threads),
                           args.full_steps)
    with tempfile.TemporaryDirectory() as tmp:
        bn = str(Path(tmp) / "bn.dat")
        pfd.convert_affine_to_bn(shipped, bn, calibration=chips)
        full_bn = per_step(core.FaceTrainer(bn, True, chips, labels, "all", 0, 1e-5, 5, 5, False, 1, 0, threads),
                           args.full_steps)
    print(f"threads {threads}, 25 faces per step, {len(chips)} training chips")
    print(f"head fast path:        {1000 * head_step:9.3f} ms/step  (feature caching once: {caching:.1f} s)")
    print(f"full net, frozen BN:   {1000 * full_affine:9.1f} ms/step")
    print(f"full net, bn_con:      {1000 * full_bn:9.1f} ms/step")
    print(f"head speed-up per step: {full_affine / head_step:,.0f}x vs frozen-BN full net, "
          f"{full_bn / head_step:,.0f}x vs bn_con full net")


if __name__ == "__main__":
    main()
