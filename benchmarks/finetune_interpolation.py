"""Weight interpolation between the shipped model and fine-tuned ones (WiSE-FT), measured on LFW.

    python benchmarks/finetune_interpolation.py MODEL.dat [MODEL.dat ...] [--alphas 0,0.5,1]
        [--domain lowres:16] [--lfw-dir DIR]

For each frozen-BN fine-tune (its best_affine.dat: unscaled descriptors) and each alpha, the model
whose weights are (1 - alpha) x shipped + alpha x fine-tuned is evaluated on pairsDevTest, in the
shifted domain and on clean faces (accuracy over the 10 interleaved folds, as finetune_lfw.py).
With batch norm frozen both nets share their affine layers, so interpolating the folded
convolutions (pyfacedlib's op list, `_core.folded_net_graph`) is interpolating the trained weights;
the interpolated net runs as an ONNX graph in onnxruntime (pyfacedlib.onnx_model's writer). An
experiment: pyfacedlib cannot write such a model as a dlib file yet.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
from finetune_lfw import devtest_pairs

import pyfacedlib as pfd
from pyfacedlib import datasets, onnx_model
from pyfacedlib._native import core
from pyfacedlib.bench import default_lfw_dir, resolve_lfw
from pyfacedlib.evaluate import verification


def interpolated_graph(base: dict, tuned: dict, alpha: float) -> dict:
    """The folded op list with every weight and bias at (1 - alpha) x base + alpha x tuned."""
    ops = []
    for a, b in zip(base["ops"], tuned["ops"], strict=True):
        op = dict(a)
        for key in ("weights", "bias"):
            if isinstance(a.get(key), np.ndarray):
                op[key] = ((1 - alpha) * a[key] + alpha * b[key]).astype(a[key].dtype)
        ops.append(op)
    return {**base, "ops": ops}


def accuracy(session, chips: np.ndarray, first: np.ndarray, second: np.ndarray, same: np.ndarray) -> float:
    d = np.concatenate([session.run(chips[i:i + 64]) for i in range(0, len(chips), 64)]).astype(np.float64)
    distances = np.linalg.norm(d[first] - d[second], axis=1)
    return verification(distances, same, fold_ids=np.arange(len(distances)) % 10).accuracy_mean


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", help="fine-tuned affine .dat files (best_affine.dat of frozen-BN runs)")
    parser.add_argument("--alphas", default="0,0.5,0.7,1")
    parser.add_argument("--domain", default="lowres:16")
    parser.add_argument("--lfw-dir", default=None)
    args = parser.parse_args()
    images, _, _ = resolve_lfw(args.lfw_dir or default_lfw_dir(), None)
    chips, first, second, same = devtest_pairs(images, images.parent)
    shifted = datasets.degrade(chips, args.domain)
    base = core.folded_net_graph(pfd.models.path("dlib_face_recognition_resnet_model_v1"))
    print(f"| model | alpha | {args.domain} DevTest accuracy | clean DevTest accuracy |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            tuned = core.folded_net_graph(model)
            for alpha in (float(a) for a in args.alphas.split(",")):
                graph = interpolated_graph(base, tuned, alpha)
                path = Path(tmp) / "interpolated.onnx"
                with mock.patch.object(onnx_model.core, "folded_net_graph", lambda _path, g=graph: g):
                    onnx_model.convert_to_onnx(model, path)
                session = onnx_model.OnnxSession(path, ["CPUExecutionProvider"])
                print(f"| {model} | {alpha:g} | {100 * accuracy(session, shifted, first, second, same):.2f}% "
                      f"| {100 * accuracy(session, chips, first, second, same):.2f}% |", flush=True)


if __name__ == "__main__":
    main()
