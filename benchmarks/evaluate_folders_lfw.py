"""evaluate_folders on LFW's DevTest identities as if they were a user's own folders: the thresholds
it picks against the ones bench-lfw picks (pairsDevTest.txt) on the same faces; the shipped model
and a model fine-tuned on DevTrain (identity-disjoint) side by side.

    PYTHONPATH=. PYFACEDLIB_DATA=../shared/datasets python benchmarks/evaluate_folders_lfw.py
        [--finetuned MODEL.dat]   (default: fine-tune one on DevTrain: strategy all, frozen BN, 150 steps,
                                   in finetune-bench/evaluate-folders/, resumed if there)
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model  # noqa: E402


def identity_folders(images: Path, people_file: Path, target: Path) -> Path:
    """target/Name/<links to Name's photos> for the people listed in a peopleDev*.txt file."""
    from pyfacedlib import datasets

    for name, count in datasets.read_lfw_people(people_file)[0]:
        (target / name).mkdir(parents=True)
        for i in range(1, count + 1):
            source = Path(datasets.lfw_image(images, name, i))
            (target / name / source.name).symlink_to(source)
    return target


def main() -> None:
    import pyfacedlib as pfd
    from pyfacedlib.bench import bench_lfw, default_lfw_dir, evaluate_folders

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--finetuned", help="a fine-tuned affine .dat (trained without DevTest identities)")
    args = parser.parse_args()
    lfw = default_lfw_dir()
    images = lfw / "lfw-deepfunneled"
    print(f"CPU: {cpu_model()}")
    with tempfile.TemporaryDirectory() as tmp:
        model = args.finetuned
        if model is None:
            train = identity_folders(images, lfw / "peopleDevTrain.txt", Path(tmp) / "devtrain")
            result = pfd.finetune(train, "finetune-bench/evaluate-folders", strategy="all", bn="frozen", steps=150)
            model = result.affine_model
        devtest = identity_folders(images, lfw / "peopleDevTest.txt", Path(tmp) / "devtest")
        folders = evaluate_folders(devtest, model=[None, model], out=Path(tmp) / "report")
        protocol = bench_lfw(lfw, lfw / "pairsDevTest.txt", models=[None, model], out=Path(tmp) / "bench")
    print(f"\nDevTest as user folders: {folders['identities']} people, {folders['faces']} faces, "
          f"{folders['same_pairs']} same + {folders['different_pairs']} different pairs; "
          f"pairsDevTest.txt: {protocol['pairs_used']} pairs\n")
    print("| model | evaluate_folders: accuracy | best threshold | threshold @ FAR 1e-2 | @ FAR 1e-3 | VAL@FAR=1e-3 | "
          "bench-lfw pairsDevTest: accuracy | best threshold | fold thresholds (mean ± std) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in folders["models"]:
        f, b = folders["models"][name], protocol["models"][name]
        print(f"| {name} | {100 * f['accuracy_mean']:.2f}% ± {100 * f['accuracy_std']:.2f} | "
              f"{f['best_threshold']:.3f} | {f['threshold_at_far_1e_2']:.3f} | {f['threshold_at_far_1e_3']:.3f} | "
              f"{100 * f['val_at_far_1e_3']:.2f}% | {100 * b['accuracy_mean']:.2f}% ± {100 * b['accuracy_std']:.2f} | "
              f"{b['best_threshold']:.3f} | "
              f"{np.mean(b['fold_thresholds']):.3f} ± {np.std(b['fold_thresholds']):.3f} |")


if __name__ == "__main__":
    main()
