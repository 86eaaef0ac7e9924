"""Fine-tuning on LFW, identity-disjoint: train on peopleDevTrain identities, test on pairsDevTest.

    python benchmarks/finetune_lfw.py [--lfw-dir DIR] [--domains none,lowres:16,gray]
        [--runs head/frozen,from_level:5/frozen,from_level:5/calibrated,all/frozen,all/calibrated]
        [--steps-head 3000] [--steps-full 150] [--lr-head LR] [--lr-full LR] [--out finetune-bench]

For each domain (a degradation applied to train, validation and test chips alike) it evaluates the
shipped model and every strategy/BN run on pairsDevTest (10 interleaved folds), and prints a table:
accuracy, VAL@FAR=1e-3, minutes of training. Validation during training uses held-out DevTrain
identities (never DevTest). Runs each model on the clean domain too, to show what fine-tuning on
a shifted domain costs on clean faces.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import pyfacedlib as pfd
from pyfacedlib import datasets
from pyfacedlib.bench import default_lfw_dir, resolve_lfw
from pyfacedlib.evaluate import verification

from _common import aligned_faces, pair_chips


def devtrain_faces(images: Path, lfw_root: Path, min_images: int, max_images: int):
    people = datasets.read_lfw_people(lfw_root / "peopleDevTrain.txt")[0]
    paths, labels = [], []
    for name, count in people:
        if count >= min_images:
            for i in range(1, min(count, max_images) + 1):
                paths.append(datasets.lfw_image(images, name, i))
                labels.append(name)
    faces = aligned_faces(paths, labels)
    return faces.chips, faces.labels


def devtest_pairs(images: Path, lfw_root: Path):
    pairs = datasets.read_lfw_pairs(lfw_root / "pairsDevTest.txt")
    unique, first, second = datasets.pair_images(pairs, images)
    return pair_chips(unique), first, second, np.array([p.same for p in pairs])


def evaluate(model: str | None, chips, first, second, same) -> dict:
    d_all = pfd.FaceEmbedder(model).embed_chips(chips).astype(np.float64)
    d = np.linalg.norm(d_all[first] - d_all[second], axis=1)
    r = verification(d, same, fold_ids=np.arange(len(d)) % 10)
    return {"accuracy": r.accuracy_mean, "accuracy_std": r.accuracy_std, "val_at_far_1e_3": r.val_at_far_1e_3}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-dir", default=None)
    parser.add_argument("--domains", default="lowres:16,none")
    parser.add_argument("--runs", default="head/frozen,from_level:5/frozen,from_level:5/calibrated,all/calibrated")
    parser.add_argument("--steps-head", type=int, default=3000)
    parser.add_argument("--steps-full", type=int, default=150)
    parser.add_argument("--lr-head", type=float, default=None, help="learning rate of head runs (default: finetune's)")
    parser.add_argument("--lr-full", type=float, default=None, help="learning rate of from_level/all runs (default: finetune's)")
    parser.add_argument("--min-images", type=int, default=3)
    parser.add_argument("--max-images", type=int, default=15)
    parser.add_argument("--out", default="finetune-bench")
    args = parser.parse_args()

    images, _, _ = resolve_lfw(args.lfw_dir or default_lfw_dir(), None)
    lfw_root = images.parent
    train_chips, train_labels = devtrain_faces(images, lfw_root, args.min_images, args.max_images)
    test_chips, first, second, same = devtest_pairs(images, lfw_root)
    print(f"train: {len(train_chips)} faces of {len(set(train_labels))} peopleDevTrain identities; "
          f"test: {len(same)} pairsDevTest pairs")
    out = Path(args.out)
    rows = []
    for domain in args.domains.split(","):
        shifted_train = datasets.degrade(train_chips, domain)
        shifted_test = datasets.degrade(test_chips, domain)
        shipped = evaluate(None, shifted_test, first, second, same)
        rows.append({"domain": domain, "run": "shipped (no training)", **shipped, "minutes": 0.0,
                     "clean_accuracy": evaluate(None, test_chips, first, second, same)["accuracy"]})
        print(rows[-1], flush=True)
        for run in args.runs.split(","):
            strategy, bn = run.split("/")
            steps = args.steps_head if strategy == "head" else args.steps_full
            lr = args.lr_head if strategy == "head" else args.lr_full
            t = time.perf_counter()
            result = pfd.finetune((shifted_train, train_labels), out / domain.replace(":", "") / run.replace("/", "_").replace(":", ""),
                                  strategy=strategy, bn=bn, steps=steps, lr=lr, resume=False, progress=True)
            minutes = (time.perf_counter() - t) / 60
            row = {"domain": domain, "run": run, **evaluate(result.affine_model, shifted_test, first, second, same),
                   "minutes": round(minutes, 1), "steps": result.steps, "best_step": result.best_step,
                   "clean_accuracy": evaluate(result.affine_model, test_chips, first, second, same)["accuracy"]}
            rows.append(row)
            print(row, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n| domain | run | DevTest accuracy | VAL@FAR=1e-3 | clean DevTest accuracy | training minutes |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['domain']} | {r['run']} | {100 * r['accuracy']:.2f}% ± {100 * r['accuracy_std']:.2f} | "
              f"{100 * r['val_at_far_1e_3']:.2f}% | {100 * r['clean_accuracy']:.2f}% | {r['minutes']} |")


if __name__ == "__main__":
    main()
