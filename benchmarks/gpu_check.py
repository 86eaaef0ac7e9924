"""Checks a CUDA build on a machine with a GPU; builds nothing itself (gpu_device.sh builds first).

    python benchmarks/gpu_check.py --data .gpu/data.npz --out OUT_DIR [--train-steps 20]

1. Parity: descriptors of the dlib-johns chips and the LFW chips from the CUDA module (dlib's
   cuDNN forward pass) against the CPU build's descriptors computed on the machine that gathered
   the data (gpu_gather.py) and against the CPU module here; passes at max |difference| <= 1e-4.
2. Embedding speed: faces/s of FaceEmbedder(device="cuda") on batches of 64, 256 and 1024 chips,
   beside the CPU module's folded pass on this machine's CPUs in the same run.
3. Training speed: full-net steps (strategy "all") of the frozen-BN (affine) and the calibrated
   bn_con net at 25 (5 x 5) and 175 (35 x 5) faces a batch, on the GPU and on 2 CPU threads here;
   the README's 2-core figures are the other comparison.
4. Margin losses on the GPU: CosFace and ArcFace steps of the whole frozen-BN net (the cosine
   class layer and loss_margin_ run in the CUDA build), from the same start, batches and class
   centres as the CPU module here: the losses step by step and how far the nets drift apart,
   relative to how far they moved; passes when every loss is finite and they agree within 5%.
5. onnxruntime-gpu, when the GPU image has it (its wheel does not fit the device's carry): the
   shipped model exported to ONNX here (needs the onnx package) and run on the CUDA execution
   provider, and on TensorRT's when onnxruntime has it, at batches of 64, 256 and 1024, with
   parity against the gathering CPU build; otherwise the table says why it was skipped.

Writes OUT_DIR/gpu_check.json and OUT_DIR/gpu_check.md; prints the table last. Exit status 1 when
parity or a margin check fails, 2 when there is no CUDA module or no GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PARITY_LIMIT = 1e-4
MARGIN_AGREEMENT = 0.05


def load_data(path: Path) -> dict:
    """gpu_gather.py's data.npz, with the chips from chips.png beside it split into johns and lfw."""
    from PIL import Image

    data = dict(np.load(path))
    chips = np.asarray(Image.open(path.parent / "chips.png").convert("RGB"))
    chips = np.ascontiguousarray(chips.reshape(-1, chips.shape[1], chips.shape[1], 3))
    count = int(data["johns_count"])
    data["johns"], data["lfw"] = chips[:count], chips[count:]
    return data


def timed_rate(run, items: int, min_seconds: float = 2.0) -> float:
    """Items per second of run() after one warm-up call, repeated for at least min_seconds."""
    run()
    calls, start = 0, time.perf_counter()
    while True:
        run()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return calls * items / elapsed


def parity(data: dict, pfd) -> dict:
    gpu = pfd.FaceEmbedder(device="cuda")
    cpu = pfd.FaceEmbedder(device="cpu")
    out = {}
    for name in ("johns", "lfw"):
        ours = gpu.embed_chips(data[name])
        out[name] = {"chips": len(ours),
                     "max_abs_vs_gathering_cpu": float(np.abs(ours - data[f"{name}_cpu"]).max()),
                     "max_abs_vs_cpu_here": float(np.abs(ours - cpu.embed_chips(data[name])).max())}
    out["passed"] = all(v["max_abs_vs_gathering_cpu"] <= PARITY_LIMIT and v["max_abs_vs_cpu_here"] <= PARITY_LIMIT
                        for v in out.values() if isinstance(v, dict))
    return out


def embedding_speed(chips: np.ndarray, pfd) -> dict:
    gpu = pfd.FaceEmbedder(device="cuda")
    cpu = pfd.FaceEmbedder(device="cpu")
    tiled = np.ascontiguousarray(np.resize(chips, (1024, *chips.shape[1:])))
    out = {"cpu_folded_faces_per_s": timed_rate(lambda: cpu.embed_chips(tiled[:256]), 256), "cpu_threads": cpu.threads}
    for batch in (64, 256, 1024):
        out[f"gpu_batch_{batch}_faces_per_s"] = timed_rate(lambda b=batch: gpu.embed_chips(tiled[:b]), batch)
    return out


def training_speed(chips: np.ndarray, labels: np.ndarray, steps: int, pfd) -> dict:
    from pyfacedlib._native import core, cuda_module

    cuda = cuda_module()
    shipped = pfd.models.path(pfd.models.FACE_RECOGNITION)
    degraded = pfd.datasets.degrade(chips, "lowres:10")   # every step has a non-zero loss
    label_list = labels.tolist()

    def ms_per_step(module, base: str, bn: bool, identities: int, threads: int, count: int) -> float:
        trainer = module.FaceTrainer(base, bn, degraded, label_list, 0, 1e-4, identities, 5, False, 1, 0, threads, True)
        trainer.train(2)          # warm-up: allocations, cuDNN algorithm choice
        trainer.parameters()      # waits for dnn_trainer's thread
        start = time.perf_counter()
        trainer.train(count)
        trainer.parameters()
        return 1000 * (time.perf_counter() - start) / count

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        bn_path = str(Path(tmp) / "bn.dat")
        pfd.convert_affine_to_bn(shipped, bn_path, calibration=chips, threads=2)
        for net, base, bn in (("frozen_bn", shipped, False), ("bn_con", bn_path, True)):
            for identities in (5, 35):
                faces = identities * 5
                gpu_ms = ms_per_step(cuda, base, bn, identities, 1, steps)
                cpu_ms = ms_per_step(core, base, bn, identities, 2, max(2, steps // 10))
                out[f"{net}_{faces}"] = {"gpu_ms": gpu_ms, "cpu2_ms": cpu_ms,
                                         "speedup_vs_2_cpu_threads": cpu_ms / gpu_ms}
    return out


def margin_training(chips: np.ndarray, labels: np.ndarray, steps: int, pfd) -> dict:
    """CosFace / ArcFace steps on the GPU beside the CPU module: same start, batches and centres."""
    from pyfacedlib._finetune import class_centres
    from pyfacedlib._native import core, cuda_module

    cuda = cuda_module()
    shipped = pfd.models.path(pfd.models.FACE_RECOGNITION)
    degraded = pfd.datasets.degrade(chips, "lowres:10")
    names = sorted(set(labels.tolist()))
    label_list = [names.index(label) for label in labels.tolist()]
    centres = class_centres(shipped, degraded, label_list, len(names), 2)
    out = {}
    for name, (angular, cosine) in (("cosface", (0.0, 0.1)), ("arcface", (0.1, 0.0))):
        runs = {}
        for device, module, threads in (("gpu", cuda, 1), ("cpu", core, 2)):
            trainer = module.FaceTrainer(shipped, False, degraded, label_list, 0, 1e-3, 5, 5, False, 1, 0, threads,
                                         True, margin_loss=module.MarginLoss(8.0, angular, cosine),
                                         class_centres=centres)
            start = trainer.parameters()
            losses = [float(trainer.train(1)) for _ in range(steps)]
            runs[device] = (losses, start, trainer.parameters())
        (gpu_losses, start, gpu_end), (cpu_losses, _, cpu_end) = runs["gpu"], runs["cpu"]
        learnable = [k for k in start if np.asarray(start[k]).size]
        moved = max(float(np.abs(np.asarray(cpu_end[k]) - np.asarray(start[k])).max()) for k in learnable)
        drift = max(float(np.abs(np.asarray(cpu_end[k]) - np.asarray(gpu_end[k])).max()) for k in learnable)
        loss_gap = max(abs(g - c) / max(abs(c), 1e-6) for g, c in zip(gpu_losses, cpu_losses))
        out[name] = {"steps": steps, "gpu_losses": gpu_losses, "cpu_losses": cpu_losses,
                     "max_relative_loss_gap": loss_gap, "parameter_drift_over_movement": drift / max(moved, 1e-12),
                     "passed": bool(np.all(np.isfinite(gpu_losses)) and loss_gap <= MARGIN_AGREEMENT
                                    and drift <= MARGIN_AGREEMENT * moved)}
    return out


def onnxruntime_gpu(data: dict, pfd) -> dict:
    """The shipped model's ONNX graph on onnxruntime's GPU providers: faces/s and parity."""
    from pyfacedlib.onnx_model import OnnxSession, available_providers

    have = available_providers()
    if "CUDAExecutionProvider" not in have:
        return {"skipped": f"no onnxruntime with CUDAExecutionProvider in this image (providers: {have or 'none'})"}
    with tempfile.TemporaryDirectory() as tmp:
        graph = pfd.convert_to_onnx(pfd.models.path(pfd.models.FACE_RECOGNITION), Path(tmp) / "face.onnx")
        tiled = np.ascontiguousarray(np.resize(data["lfw"], (1024, *data["lfw"].shape[1:])))
        out: dict = {}
        for provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
            if provider not in have:
                out[provider] = {"skipped": "not in this onnxruntime"}
                continue
            session = OnnxSession(graph, [provider, "CPUExecutionProvider"])
            ours = session.run(data["lfw"], batch=256)
            row = {"max_abs_vs_gathering_cpu": float(np.abs(ours - data["lfw_cpu"]).max())}
            for batch in (64, 256, 1024):
                rate = timed_rate(lambda b=batch, s=session: s.run(tiled[:b], batch=b), batch)
                row[f"batch_{batch}_faces_per_s"] = rate
            out[provider] = row
    return out


def table(result: dict) -> str:
    lines = [f"GPU: {', '.join(result['build']['cuda_devices'])}; CUDA {result['build']['cuda_version']}, "
             f"cuDNN {result['build']['cudnn_version']}; CPU here: {result['cpu']}", "",
             "| check | figure |", "|---|---|"]
    for name in ("johns", "lfw"):
        p = result["parity"][name]
        lines.append(f"| parity, {p['chips']} {name} chips: max abs vs the gathering CPU build / the CPU module here | "
                     f"{p['max_abs_vs_gathering_cpu']:.2e} / {p['max_abs_vs_cpu_here']:.2e} |")
    e = result["embedding"]
    for batch in (64, 256, 1024):
        lines.append(f"| embedding, batch {batch} (faces/s) | {e[f'gpu_batch_{batch}_faces_per_s']:,.0f} |")
    lines.append(f"| embedding, CPU folded pass here, {e['cpu_threads']} threads (faces/s) | "
                 f"{e['cpu_folded_faces_per_s']:,.0f} |")
    for key, t in result["training"].items():
        net, faces = key.rsplit("_", 1)
        lines.append(f"| full-net step, {net}, {faces} faces: GPU ms / 2 CPU threads here ms (x) | "
                     f"{t['gpu_ms']:.1f} / {t['cpu2_ms']:.0f} ({t['speedup_vs_2_cpu_threads']:.0f}x) |")
    for name, m in result["margin"].items():
        if "failed" in m:
            lines.append(f"| margin-loss steps on the GPU | failed: {m['failed']} |")
            continue
        lines.append(f"| {name}, {m['steps']} whole-net steps on GPU vs CPU: max relative loss gap / parameter "
                     f"drift over movement (passed) | {m['max_relative_loss_gap']:.1e} / "
                     f"{m['parameter_drift_over_movement']:.1e} ({m['passed']}) |")
    for provider, row in result.get("onnxruntime", {}).items():
        if "skipped" in row or provider == "skipped":
            lines.append(f"| onnxruntime-gpu {'' if provider == 'skipped' else provider} | skipped: "
                         f"{row if provider == 'skipped' else row['skipped']} |")
            continue
        speeds = " / ".join(f"{row[f'batch_{b}_faces_per_s']:,.0f}" for b in (64, 256, 1024))
        lines.append(f"| onnxruntime {provider}, batch 64 / 256 / 1024 (faces/s); max abs vs the gathering CPU "
                     f"| {speeds}; {row['max_abs_vs_gathering_cpu']:.2e} |")
    lines.append(f"| parity passed (<= {PARITY_LIMIT:g}) | {result['parity']['passed']} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=".gpu/data.npz", help="gpu_gather.py's data.npz")
    parser.add_argument("--out", default="gpu-check", help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--train-steps", type=int, default=20)
    args = parser.parse_args()

    from _common import cpu_model

    import pyfacedlib as pfd

    info = pfd.build_info()
    print(json.dumps(info, indent=1, default=str), flush=True)
    if not info["cuda"] or not info["cuda_devices"]:
        print(f"no CUDA module or no GPU: {info['cuda_detail']}", file=sys.stderr)
        return 2
    data = load_data(Path(args.data))
    result = {"build": info, "cpu": cpu_model()}
    result["parity"] = parity(data, pfd)
    print(json.dumps(result["parity"]), flush=True)
    result["embedding"] = embedding_speed(data["lfw"], pfd)
    print(json.dumps(result["embedding"]), flush=True)
    try:   # optional: the image may lack onnxruntime-gpu or onnx
        result["onnxruntime"] = onnxruntime_gpu(data, pfd)
    except Exception as error:  # noqa: BLE001 - reported in the table
        result["onnxruntime"] = {"skipped": f"failed: {error!r}"}
    print(json.dumps(result["onnxruntime"]), flush=True)
    result["training"] = training_speed(data["lfw"], data["lfw_labels"], args.train_steps, pfd)
    try:   # a failure here must not lose the figures above
        result["margin"] = margin_training(data["lfw"], data["lfw_labels"], 5, pfd)
    except Exception as error:  # noqa: BLE001 - reported in the table and the exit status
        result["margin"] = {"error": {"failed": repr(error), "passed": False}}
    print(json.dumps(result["margin"]), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=1, default=str))
    text = table(result)
    (out / "gpu_check.md").write_text(text + "\n")
    print(text)
    passed = result["parity"]["passed"] and all(m["passed"] for m in result["margin"].values())
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
