"""Clustering LFW faces: dlib's Chinese whispers against scikit-learn's DBSCAN, pairwise precision /
recall / F1 (scikit-learn's pair_confusion_matrix), clusters found against the true number, time.

Sets: the 423 LFW people with >= 5 photos (5,985 faces), and all of LFW (13,233 faces, 5,749 people,
4,069 of them with one photo). Descriptors: the shipped model on the chip cache's chips. Faces
left in no cluster (-1) count as singletons in the pairwise metrics.

    PYTHONPATH=. PYFACEDLIB_DATA=../shared/datasets python benchmarks/cluster_lfw.py
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, embedded, lfw_people  # noqa: E402

SETTINGS = [("chinese_whispers", 0.4, 2), ("chinese_whispers", 0.5, 2), ("chinese_whispers", 0.6, 2),
            ("dbscan", 0.4, 2), ("dbscan", 0.5, 2), ("dbscan", 0.4, 3), ("dbscan", 0.5, 3), ("dbscan", 0.5, 5)]


def main() -> None:
    from pyfacedlib.clustering import cluster
    from pyfacedlib.evaluate import pairwise_precision_recall

    print(f"CPU: {cpu_model()}")
    people = lfw_people()
    paths = [f for files in people.values() for f in files]
    names = np.array([name for name, files in people.items() for _ in files])
    descriptors = embedded(paths)
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
            print(f"| {set_name} ({len(d)}) | {method} | {threshold} | {min_size} | {100 * scores['precision']:.2f}% | "
                  f"{100 * scores['recall']:.2f}% | {100 * scores['f1']:.2f}% | {labels.max() + 1} ({true_groups}) | "
                  f"{int((labels < 0).sum())} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
