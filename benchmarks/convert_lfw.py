"""Exact vs calibrated affine->bn conversion on LFW, identity-disjoint.

    python benchmarks/convert_lfw.py [--lfw-dir DIR] [--calibration-faces 2000]

Calibrates batch norm on peopleDevTrain faces, measures the batch-mode drift (bn net in training
mode, mini-batches of 25 = 5 identities x 5, vs the affine net) on peopleDevTest faces, and the
pairsDevTest verification accuracy (10 interleaved folds) of: the affine net; the exact and the
calibrated bn nets run in training mode (consecutive batches of 25 faces, each normalised by its own
batch statistics, which is what dnn_trainer sees).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import aligned_faces, pair_chips

import pyfacedlib as pfd
from pyfacedlib import datasets
from pyfacedlib._native import core
from pyfacedlib.bench import default_lfw_dir, resolve_lfw
from pyfacedlib.convert import batch_mode_drift
from pyfacedlib.evaluate import verification
from pyfacedlib.faces import identity_batches


def faces_of(images: Path, people_file: Path, min_images: int, max_images: int):
    people = [(n, c) for n, c in datasets.read_lfw_people(people_file)[0] if c >= min_images]
    paths = [datasets.lfw_image(images, n, i) for n, c in people for i in range(1, min(c, max_images) + 1)]
    labels = [n for n, c in people for _ in range(1, min(c, max_images) + 1)]
    faces = aligned_faces(paths, labels)
    return faces.chips, faces.labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-dir", default=None)
    parser.add_argument("--calibration-faces", type=int, default=2000)
    args = parser.parse_args()
    images, _, variant = resolve_lfw(args.lfw_dir or default_lfw_dir(), None)
    root = images.parent
    shipped = pfd.models.path("dlib_face_recognition_resnet_model_v1")

    calib_chips, _ = faces_of(images, root / "peopleDevTrain.txt", 3, 15)
    calib_chips = calib_chips[np.random.default_rng(0).permutation(len(calib_chips))[:args.calibration_faces]]
    held_chips, held_labels = faces_of(images, root / "peopleDevTest.txt", 5, 10)
    pairs = datasets.read_lfw_pairs(root / "pairsDevTest.txt")
    unique, first, second = datasets.pair_images(pairs, images)
    test_chips = pair_chips(unique)
    same = np.array([p.same for p in pairs])
    folds = np.arange(len(same)) % 10

    def accuracy(descriptors: np.ndarray) -> float:
        d = np.linalg.norm(descriptors[first].astype(np.float64) - descriptors[second], axis=1)
        return verification(d, same, fold_ids=folds).accuracy_mean

    print(f"{variant}; calibration: {len(calib_chips)} peopleDevTrain faces; drift: {len(held_chips)} peopleDevTest "
          f"faces; accuracy: {len(same)} pairsDevTest pairs")
    affine_descriptors = pfd.FaceEmbedder().embed_chips(test_chips)
    print(f"affine net (inference):                 accuracy {100 * accuracy(affine_descriptors):.2f}%")
    reference = pfd.FaceEmbedder().embed_chips(held_chips).astype(np.float64)
    batches = identity_batches(held_labels.tolist())
    # pairsDevTest images in a fixed shuffled order, so batches mix identities as training batches do
    order = np.random.default_rng(0).permutation(len(unique))
    n = len(order) // 25 * 25
    with tempfile.TemporaryDirectory() as tmp:
        for mode, calibration in (("exact", None), ("calibrated", calib_chips)):
            dst = Path(tmp) / f"{mode}.dat"
            t = time.perf_counter()
            pfd.convert_affine_to_bn(shipped, dst, calibration=calibration)
            seconds = time.perf_counter() - t
            drift = batch_mode_drift(dst, reference, held_chips, batches)
            train_mode = affine_descriptors.copy()
            train_mode[order[:n]] = core.bn_net_descriptors(str(dst), np.ascontiguousarray(test_chips[order[:n]]), 25)
            print(f"{mode:<10} bn net, training mode, batches of 25: accuracy {100 * accuracy(train_mode):.2f}% "
                  f"(last {len(order) - n} images in inference mode); drift mean {drift.mean():.4f} "
                  f"max {drift.max():.4f} over {len(drift)} faces in {len(batches)} batches; "
                  f"conversion {seconds:.1f} s")


if __name__ == "__main__":
    main()
