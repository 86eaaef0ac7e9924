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

DLIB_CLUSTER_THRESHOLD = 0.5  # dlib's face_clustering example
# How often two faces of *different* people are closer than a distance, for dlib's shipped model:
# (distance, fraction of impostor pairs below it), from 39.8 M random impostor pairs of LFW's
# peopleDevTrain identities (benchmarks/cluster_lfw.py --impostor-table prints it; DevTest and the
# LFW test folds were not used). Fine-tuned exports are rescaled so that 0.6 is their best
# verification threshold, as for the shipped model, so the same table serves them (approximately).
IMPOSTOR_RATES = ((0.34, 2.764e-07), (0.36, 6.281e-07), (0.38, 1.608e-06), (0.40, 4.824e-06), (0.42, 1.133e-05),
                  (0.44, 2.728e-05), (0.46, 6.281e-05), (0.48, 1.294e-04), (0.50, 2.593e-04))
# Expected links per face to other people's faces that Chinese whispers tolerates: the best threshold
# on DevTrain subsets of 500, 2,000 and 5,000 faces (0.50, 0.46, 0.44) each gives ~0.13 such links.
IMPOSTOR_LINKS_PER_FACE = 0.13


def auto_threshold(faces: int) -> float:
    """The default clustering threshold for `faces` faces: dlib's 0.5 while a face has at most
    IMPOSTOR_LINKS_PER_FACE expected links to other people's faces at 0.5 (up to ~500 faces), and
    below it the distance at which it has that many (log-linear in IMPOSTOR_RATES), never below
    0.34: Chinese whispers chains clusters through such links, and their number grows with the
    square of the set while true links grow linearly."""
    if faces < 2:
        return DLIB_CLUSTER_THRESHOLD
    wanted = IMPOSTOR_LINKS_PER_FACE / faces
    distances = np.array([d for d, _ in IMPOSTOR_RATES])
    rates = np.log10([r for _, r in IMPOSTOR_RATES])
    if np.log10(wanted) >= rates[-1]:
        return DLIB_CLUSTER_THRESHOLD
    return float(round(np.interp(np.log10(wanted), rates, distances), 3))


@dataclass(frozen=True)
class ClusterSettings:
    """How faces nobody has named are grouped (pyfacedlib.cluster and `pyfacedlib cluster`)."""

    threshold: float | None = option(None, "faces closer than this are linked; default: from the number of faces "
                                           "(auto_threshold: dlib's 0.5 up to ~500 faces, lower for more)")
    method: str = option("chinese_whispers", "dlib's Chinese whispers or scikit-learn's DBSCAN", choices=METHODS)
    min_size: int = option(2, "smaller clusters count as no cluster (-1)")


def chinese_whispers(descriptors: np.ndarray, threshold: float = DLIB_CLUSTER_THRESHOLD) -> np.ndarray:
    """dlib's Chinese whispers graph clustering: an edge joins every two descriptors closer than
    `threshold` (dlib's face_clustering example uses 0.5), then dlib::chinese_whispers. One label per
    row; every face gets a cluster (singletons included)."""
    from ._native import core

    array = np.ascontiguousarray(descriptors, np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected (N, D) descriptors, got shape {array.shape}")
    return np.asarray(core.chinese_whispers(array, float(threshold)), np.int64)


def cluster(descriptors: np.ndarray, threshold: float | None = ClusterSettings.threshold,
            method: str = ClusterSettings.method, min_size: int = ClusterSettings.min_size) -> np.ndarray:
    """Cluster labels for (N, 128) descriptors: 0 for the largest cluster, 1 for the next, ..., and -1
    (noise) for faces in clusters smaller than `min_size`.

    threshold: faces closer than this are linked; None (the default) = auto_threshold(N): dlib's
    0.5 (its face_clustering example) for sets up to ~500 faces, lower for larger sets, where 0.5
    chains different people into one cluster (all of LFW: pairwise F1 55% at 0.5; see
    docs/cluster-export-evaluate.md). method: "chinese_whispers" (dlib's recipe: edges below the
    threshold) or "dbscan" (scikit-learn, eps = threshold, min_samples = min_size: a face with fewer
    than min_size - 1 others within the threshold is noise unless it is near a core face).
    """
    array = np.asarray(descriptors, np.float64)
    if array.ndim != 2 or (len(array) and array.shape[1] != 128):
        raise ValueError(f"expected (N, 128) descriptors, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("descriptors contain NaN or infinity")
    if threshold is None:
        threshold = auto_threshold(len(array))
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
