"""Clustering faces nobody has named: dlib's Chinese whispers (its face_clustering example) or
scikit-learn's DBSCAN, on descriptors."""
from __future__ import annotations

import numpy as np

METHODS = ("chinese_whispers", "dbscan")


def chinese_whispers(descriptors: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """dlib's Chinese whispers graph clustering: an edge joins every two descriptors closer than
    `threshold` (dlib's face_clustering example uses 0.5), then dlib::chinese_whispers. One label per
    row; every face gets a cluster (singletons included)."""
    from ._native import core

    array = np.ascontiguousarray(descriptors, np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected (N, D) descriptors, got shape {array.shape}")
    return np.asarray(core.chinese_whispers(array, float(threshold)), np.int64)


def cluster(descriptors: np.ndarray, threshold: float = 0.5, method: str = "chinese_whispers",
            min_size: int = 2) -> np.ndarray:
    """Cluster labels for (N, 128) descriptors: 0 for the largest cluster, 1 for the next, ..., and -1
    (noise) for faces in clusters smaller than `min_size`.

    method: "chinese_whispers" (dlib's recipe: edges below `threshold`, default 0.5) or "dbscan"
    (scikit-learn, eps = threshold, min_samples = min_size: a face with fewer than min_size - 1
    others within the threshold is noise unless it is near a core face).
    """
    array = np.asarray(descriptors, np.float64)
    if array.ndim != 2 or (len(array) and array.shape[1] != 128):
        raise ValueError(f"expected (N, 128) descriptors, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("descriptors contain NaN or infinity")
    if not 0 < threshold < 4:
        raise ValueError(f"threshold must be a distance in (0, 4), got {threshold!r}")
    if not isinstance(min_size, (int, np.integer)) or min_size < 1:
        raise ValueError(f"min_size must be an integer >= 1, got {min_size!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if len(array) == 0:
        return np.zeros(0, np.int64)
    if method == "chinese_whispers":
        raw = chinese_whispers(array, threshold)
    else:
        from sklearn.cluster import DBSCAN

        raw = DBSCAN(eps=threshold, min_samples=int(min_size)).fit_predict(array)
    labels = np.full(len(raw), -1, np.int64)
    ids, counts = np.unique(raw[raw >= 0], return_counts=True)
    order = np.lexsort((ids, -counts))  # largest first, ties by first label
    for new, i in enumerate(j for j in order if counts[j] >= min_size):
        labels[raw == ids[i]] = new
    return labels
