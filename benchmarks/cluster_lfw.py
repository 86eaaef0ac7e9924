"""Clustering LFW faces: dlib's Chinese whispers against scikit-learn's DBSCAN, pairwise precision /
recall / F1 (scikit-learn's pair_confusion_matrix), clusters found against the true number, time.

Sets: the 423 LFW people with >= 5 photos (5,985 faces), and all of LFW (13,233 faces, 5,749 people,
4,069 of them with one photo). Descriptors: the shipped model on the chip cache's chips. Faces
left in no cluster (-1) count as singletons in the pairwise metrics.

Then the default threshold (pyfacedlib.clustering.auto_threshold, fitted on peopleDevTrain) against
dlib's recipe (0.5) per set size: random sets of 50 to 2,000 faces of peopleDevTest's people (held
out: none of them was used to choose the rule), and of 5,000 and 10,000 faces of all LFW people;
people drawn in a seeded random order with all their photos (at most 20 each, so one person cannot
fill a set), several seeds per size; mean pairwise precision / recall / F1, clusters found against
the true number of people with >= 2 faces, and the paired F1 difference (worst seed).
--impostor-table prints auto_threshold's table: the fraction of peopleDevTrain impostor pairs below
each distance.

    PYTHONPATH=. PYFACEDLIB_DATA=../shared/datasets python benchmarks/cluster_lfw.py [--impostor-table]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, embedded, lfw_people  # noqa: E402

SETTINGS = [("chinese_whispers", None, 2), ("chinese_whispers", 0.4, 2), ("chinese_whispers", 0.5, 2),
            ("chinese_whispers", 0.6, 2),
            ("dbscan", 0.4, 2), ("dbscan", 0.5, 2), ("dbscan", 0.4, 3), ("dbscan", 0.5, 3), ("dbscan", 0.5, 5)]


SIZES = [("peopleDevTest", 50, 10), ("peopleDevTest", 200, 10), ("peopleDevTest", 500, 10),
         ("peopleDevTest", 1000, 10), ("peopleDevTest", 2000, 10), ("all LFW", 5000, 5), ("all LFW", 10000, 5)]
PHOTOS_PER_PERSON = 20


def people_file(name: str) -> set[str]:
    """The people listed in LFW's peopleDevTrain.txt / peopleDevTest.txt."""
    from pyfacedlib.bench import default_lfw_dir

    lines = (default_lfw_dir() / f"{name}.txt").read_text().splitlines()[1:]
    return {line.split("\t")[0] for line in lines if line.strip()}


def random_set(names: np.ndarray, pool: set[str], size: int, seed: int) -> np.ndarray:
    """Rows of `size` faces: pool people in a seeded random order, all their photos (at most
    PHOTOS_PER_PERSON), until the set is full."""
    rng = np.random.default_rng(seed)
    people = sorted(pool)
    rng.shuffle(people)
    rows_of: dict[str, list[int]] = {}
    for row, name in enumerate(names):
        rows_of.setdefault(str(name), []).append(row)
    chosen: list[int] = []
    for person in people:
        rows = rows_of.get(person, [])
        if len(rows) > PHOTOS_PER_PERSON:
            rows = sorted(rng.choice(rows, PHOTOS_PER_PERSON, replace=False).tolist())
        chosen += rows
        if len(chosen) >= size:
            return np.array(chosen[:size])
    raise SystemExit(f"the pool holds fewer than {size} faces")


def scores_of(truth: np.ndarray, labels: np.ndarray) -> dict:
    from pyfacedlib.evaluate import pairwise_precision_recall

    singletons = np.where(labels >= 0, labels, -1 - np.arange(len(labels)))
    return {**pairwise_precision_recall(truth, singletons), "clusters": int(labels.max() + 1)}


def per_size(descriptors: np.ndarray, names: np.ndarray) -> None:
    from pyfacedlib.clustering import DLIB_CLUSTER_THRESHOLD, auto_threshold, cluster

    pools = {"peopleDevTest": people_file("peopleDevTest"), "all LFW": set(names.tolist())}
    print("\n| faces (people from) | seeds | default threshold | rule | precision | recall | F1 | clusters (true "
          "people with >= 2 faces) | F1 default - dlib (worst seed) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for pool, size, seeds in SIZES:
        results: dict[str, list[dict]] = {"dlib's recipe (0.5)": [], "default (auto_threshold)": []}
        truths = []
        for seed in range(seeds):
            rows = random_set(names, pools[pool], size, seed)
            truth = names[rows]
            truths.append(sum(1 for n in set(truth.tolist()) if (truth == n).sum() >= 2))
            results["dlib's recipe (0.5)"].append(scores_of(truth, cluster(descriptors[rows],
                                                                           threshold=DLIB_CLUSTER_THRESHOLD)))
            results["default (auto_threshold)"].append(scores_of(truth, cluster(descriptors[rows])))
        gain = [ours["f1"] - dlib["f1"] for dlib, ours in zip(*results.values(), strict=True)]
        for rule, runs in results.items():
            mean = {k: np.mean([r[k] for r in runs]) for k in ("precision", "recall", "f1", "clusters")}
            extra = f"{100 * np.mean(gain):+.1f} ({100 * min(gain):+.1f})" if rule.startswith("default") else ""
            print(f"| {size} ({pool}) | {seeds} | {auto_threshold(size)} | {rule} | {100 * mean['precision']:.1f}% | "
                  f"{100 * mean['recall']:.1f}% | {100 * mean['f1']:.1f}% | {mean['clusters']:.0f} "
                  f"({np.mean(truths):.0f}) | {extra} |", flush=True)


def impostor_table(descriptors: np.ndarray, names: np.ndarray, batches: int = 40) -> None:
    """The fraction of random peopleDevTrain impostor pairs closer than each distance."""
    train = people_file("peopleDevTrain")
    rows = np.array([i for i, n in enumerate(names) if n in train])
    rng = np.random.default_rng(0)
    distances = np.round(np.arange(0.30, 0.605, 0.02), 2)
    below, pairs = np.zeros(len(distances)), 0
    for _ in range(batches):
        a, b = rng.choice(rows, 1_000_000), rng.choice(rows, 1_000_000)
        keep = names[a] != names[b]
        d = np.linalg.norm(descriptors[a[keep]] - descriptors[b[keep]], axis=1)
        below += (d[:, None] < distances[None, :]).sum(0)
        pairs += int(keep.sum())
    print(f"\nimpostor pairs of peopleDevTrain people: {pairs:,}")
    for distance, count in zip(distances, below, strict=True):
        print(f"({distance:.2f}, {count / pairs:.3e}),  # {int(count)} pairs")


def main() -> None:
    from pyfacedlib.clustering import auto_threshold, cluster
    from pyfacedlib.evaluate import pairwise_precision_recall

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impostor-table", action="store_true", help="print auto_threshold's table and stop")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}")
    people = lfw_people()
    paths = [f for files in people.values() for f in files]
    names = np.array([name for name, files in people.items() for _ in files])
    descriptors = embedded(paths)
    if args.impostor_table:
        impostor_table(descriptors, names)
        return
    counts = {name: len(files) for name, files in people.items()}
    sets = {"LFW people with >= 5 photos": np.array([counts[n] >= 5 for n in names]),
            "all of LFW": np.ones(len(names), bool)}
    print("| faces | method | threshold | min size | precision | recall | F1 | clusters (true people with >= 2 "
          "photos) | faces in no cluster | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for set_name, mask in sets.items():
        d, truth = descriptors[mask], names[mask]
        true_groups = sum(1 for n in set(truth.tolist()) if counts[n] >= 2)
        for method, threshold, min_size in SETTINGS:
            start = time.perf_counter()
            labels = cluster(d, threshold=threshold, method=method, min_size=min_size)
            seconds = time.perf_counter() - start
            singletons = np.where(labels >= 0, labels, -1 - np.arange(len(labels)))
            scores = pairwise_precision_recall(truth, singletons)
            shown = threshold if threshold is not None else f"default ({auto_threshold(len(d))})"
            print(f"| {set_name} ({len(d)}) | {method} | {shown} | {min_size} | {100 * scores['precision']:.2f}% | "
                  f"{100 * scores['recall']:.2f}% | {100 * scores['f1']:.2f}% | {labels.max() + 1} ({true_groups}) | "
                  f"{int((labels < 0).sum())} | {seconds:.1f} |", flush=True)
    per_size(descriptors, names)


if __name__ == "__main__":
    main()
