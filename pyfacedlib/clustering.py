"""Clustering faces nobody has named: dlib's Chinese whispers (its face_clustering example) or
scikit-learn's DBSCAN, on descriptors."""
from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._config import option

METHODS = ("chinese_whispers", "dbscan")


@dataclass(frozen=True)
class ClusterSettings:
    """How faces nobody has named are grouped (pyfacedlib.cluster and `pyfacedlib cluster`)."""

    threshold: float = option(0.5, "faces closer than this are linked (dlib's face_clustering example: 0.5)")
    method: str = option("chinese_whispers", "dlib's Chinese whispers or scikit-learn's DBSCAN", choices=METHODS)
    min_size: int = option(2, "smaller clusters count as no cluster (-1)")


def chinese_whispers(descriptors: np.ndarray, threshold: float = ClusterSettings.threshold) -> np.ndarray:
    """dlib's Chinese whispers graph clustering: an edge joins every two descriptors closer than
    `threshold` (dlib's face_clustering example uses 0.5), then dlib::chinese_whispers. One label per
    row; every face gets a cluster (singletons included)."""
    from ._native import core

    array = np.ascontiguousarray(descriptors, np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected (N, D) descriptors, got shape {array.shape}")
    return np.asarray(core.chinese_whispers(array, float(threshold)), np.int64)


def cluster(descriptors: np.ndarray, threshold: float = ClusterSettings.threshold,
            method: str = ClusterSettings.method, min_size: int = ClusterSettings.min_size) -> np.ndarray:
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


CLUSTER_FOLDER = re.compile(r"cluster_\d+")


def link_cluster_folders(out: str | os.PathLike, sources: Sequence[str], labels: np.ndarray) -> int:
    """One folder of symbolic links per cluster: OUT/cluster_000/<photo> -> the photo of each face
    with that label (label -1: no folder). Folders of an earlier run that hold only links are
    replaced; photos of the same name in one cluster get a numbered link. Returns the clusters linked."""
    folder_root = Path(out)
    labels = np.asarray(labels)
    if len(sources) != len(labels):
        raise ValueError(f"{len(sources)} sources but {len(labels)} labels")
    if folder_root.is_dir():
        for old in folder_root.iterdir():
            if old.is_dir() and CLUSTER_FOLDER.fullmatch(old.name) and all(p.is_symlink() for p in old.iterdir()):
                shutil.rmtree(old)
    sizes = np.bincount(labels[labels >= 0]) if (labels >= 0).any() else np.zeros(0, int)
    width = max(3, len(str(len(sizes))))
    for label in range(len(sizes)):
        folder = folder_root / f"cluster_{label:0{width}d}"
        folder.mkdir(parents=True, exist_ok=True)
        for row in np.flatnonzero(labels == label):
            source = Path(sources[int(row)]).resolve()
            link = folder / source.name
            if link.is_symlink() and Path(os.readlink(link)) != source:
                link = folder / f"{len(list(folder.iterdir()))}_{source.name}"
            if not link.is_symlink():
                link.symlink_to(source)
    return len(sizes)
