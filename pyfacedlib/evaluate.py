"""Verification (the LFW 10-fold protocol), identification and clustering metrics.

ROC, AUC and the ROC-derived numbers come from scikit-learn; the threshold protocol is the
standard one: for each fold, the threshold that maximises accuracy on the other folds is applied
to the held-out fold. Pairs over labelled faces come from one sampler, sample_pairs (fine-tuning's
validation and bench.evaluate_folders both use it).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np

DLIB_THRESHOLD = 0.6

PairInput = np.ndarray | tuple | list


@dataclass
class VerificationReport:
    """Results of the 10-fold verification protocol (distances: smaller = more alike)."""

    accuracy_mean: float
    accuracy_std: float
    accuracy_at_0_6: float            # all pairs, dlib's fixed threshold 0.6
    val_at_far_1e_3: float            # true-accept rate at false-accept rate <= 1e-3
    val_at_far_1e_2: float
    auc: float
    eer: float
    eer_threshold: float
    best_threshold: float = float("nan")          # most accurate threshold on all pairs (same below it)
    threshold_at_far_1e_2: float = float("nan")   # largest threshold whose false-accept rate <= 1e-2
    threshold_at_far_1e_3: float = float("nan")
    fold_accuracies: list[float] = field(default_factory=list)
    fold_thresholds: list[float] = field(default_factory=list)
    pairs: int = 0
    roc_far: list[float] = field(default_factory=list, repr=False)  # for plots
    roc_tar: list[float] = field(default_factory=list, repr=False)

    def to_dict(self, with_roc: bool = False) -> dict:
        """Plain data; the ROC curve only when asked."""
        data = asdict(self)
        if not with_roc:
            data.pop("roc_far"), data.pop("roc_tar")
        return data


def pair_distances(pairs: PairInput) -> np.ndarray:
    """Distances from (emb1, emb2) arrays, an (N, 2, D) array, or already-computed (N,) distances."""
    if isinstance(pairs, (tuple, list)) and len(pairs) == 2:
        a, b = (np.asarray(x, np.float64) for x in pairs)
        if a.shape != b.shape or a.ndim != 2:
            raise ValueError(f"embedding pairs must be two (N, D) arrays of one shape, got {a.shape} and {b.shape}")
        return np.linalg.norm(a - b, axis=1)
    array = np.asarray(pairs, np.float64)
    if array.ndim == 3 and array.shape[1] == 2:
        return np.linalg.norm(array[:, 0] - array[:, 1], axis=1)
    if array.ndim == 1:
        return array
    raise ValueError(f"expected distances (N,), embedding pairs (N,2,D) or (emb1, emb2); got shape {array.shape}")


def best_threshold(distances: np.ndarray, issame: np.ndarray) -> float:
    """The threshold maximising accuracy of `distance < threshold` (midpoint of the best gap).

    Hand-written: scikit-learn's roc_curve gives thresholds at the data points, not the accuracy-
    maximising midpoint the LFW protocol uses, and one sort + cumulative sum is O(N log N)."""
    order = np.argsort(distances, kind="mergesort")
    d, same = distances[order], issame[order]
    # accuracy when the first k sorted pairs are called 'same' (k = 0..N)
    correct = np.concatenate([[0], np.cumsum(np.where(same, 1, -1))]) + (~same).sum()
    valid = np.concatenate([[True], d[1:] > d[:-1], [True]])  # thresholds only between distinct values
    k = int(np.argmax(np.where(valid, correct, -1)))
    lower = d[k - 1] if k > 0 else d[0] - 1.0
    upper = d[k] if k < len(d) else d[-1] + 1.0
    return float((lower + upper) / 2)


def verification(distances_or_embedding_pairs: PairInput, issame: Sequence[bool] | np.ndarray, folds: int = 10,
                 fold_ids: Sequence[int] | np.ndarray | None = None) -> VerificationReport:
    """The standard verification protocol.

    distances_or_embedding_pairs: (N,) distances, (N,2,D) embedding pairs, or (emb1, emb2).
    issame: (N,) bool. folds: number of contiguous folds (LFW's pairs.txt order), unless fold_ids
    gives each pair's fold.
    """
    from sklearn.metrics import roc_auc_score, roc_curve

    distances = pair_distances(distances_or_embedding_pairs)
    same = np.asarray(issame, bool)
    if len(same) != len(distances):
        raise ValueError(f"{len(distances)} distances but {len(same)} labels")
    if not np.all(np.isfinite(distances)):
        raise ValueError("distances contain NaN or infinity")
    if same.all() or (~same).all():
        raise ValueError("verification needs both same and different pairs")
    ids = np.asarray(fold_ids) if fold_ids is not None else np.arange(len(same)) * folds // len(same)
    accuracies, thresholds = [], []
    for fold in np.unique(ids):
        test = ids == fold
        threshold = best_threshold(distances[~test], same[~test])
        thresholds.append(threshold)
        accuracies.append(float(np.mean((distances[test] < threshold) == same[test])))
    far, tar, roc_thresholds = roc_curve(same, -distances)
    frr = 1 - tar
    e = int(np.argmin(np.abs(far - frr)))

    def threshold_at(rate: float) -> float:
        """Accepting distances <= this keeps the false-accept rate <= rate (roc_curve's points)."""
        allowed = np.flatnonzero(far <= rate)
        return float(-roc_thresholds[allowed[-1]]) if len(allowed) and np.isfinite(roc_thresholds[allowed[-1]]) \
            else 0.0
    return VerificationReport(
        accuracy_mean=float(np.mean(accuracies)),
        accuracy_std=float(np.std(accuracies)),
        accuracy_at_0_6=float(np.mean((distances < DLIB_THRESHOLD) == same)),
        val_at_far_1e_3=float(tar[far <= 1e-3].max(initial=0.0)),
        val_at_far_1e_2=float(tar[far <= 1e-2].max(initial=0.0)),
        auc=float(roc_auc_score(same, -distances)),
        eer=float((far[e] + frr[e]) / 2),
        eer_threshold=float(-roc_thresholds[e]),
        best_threshold=best_threshold(distances, same),
        threshold_at_far_1e_2=threshold_at(1e-2),
        threshold_at_far_1e_3=threshold_at(1e-3),
        fold_accuracies=accuracies,
        fold_thresholds=thresholds,
        pairs=int(len(same)),
        roc_far=far.tolist(),
        roc_tar=tar.tolist(),
    )


class Pairs(NamedTuple):
    """Verification pairs drawn by sample_pairs: indices into the labels, whether each pair is of one
    identity, and each pair's fold."""

    first: np.ndarray    # (P,) int64, first < second
    second: np.ndarray   # (P,) int64
    same: np.ndarray     # (P,) bool
    fold: np.ndarray     # (P,) int64 in 0..folds-1


def _decode_triangle(index: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), a < b < size, of the index-th pair in row-major order of the pairs of `size` items."""
    # row a starts at a*(2*size - a - 1)/2; invert with the quadratic formula, then correct rounding
    b2 = 2 * size - 1
    a = np.floor((b2 - np.sqrt(np.maximum(b2 * b2 - 8 * index, 0).astype(np.float64))) / 2).astype(np.int64)
    a = np.clip(a, 0, np.maximum(size - 2, 0))
    start = lambda row: row * (2 * size - row - 1) // 2  # noqa: E731
    a = np.where(start(a) > index, a - 1, a)
    a = np.where(start(a + 1) <= index, a + 1, a)
    return a, a + 1 + (index - start(a))


def sample_pairs(labels: Sequence | np.ndarray, max_same_pairs: int = 50_000, seed: int = 0,
                 folds: int = 10) -> Pairs:
    """Balanced verification pairs over labelled faces: the one pair sampler of pyfacedlib (fine-tuning's
    validation, bench.evaluate_folders).

    - Same-identity pairs: every pair (i < j) of faces with one label; when there are more than
      `max_same_pairs`, that many drawn uniformly at random without replacement.
    - Different-identity pairs: as many as there are same pairs (fewer only when fewer exist), drawn
      uniformly without replacement from all pairs of faces with different labels.
      Both draws decode pair numbers instead of listing all pairs, so memory grows with the pairs
      drawn, not with the square of the faces.
    - seed: one numpy Generator drives every draw: the same labels and seed give the same pairs.
    - folds: each pair's fold for the verification protocol, stratified: the same pairs, in random
      order, are dealt round-robin into `folds` folds, the different pairs likewise, so every fold
      holds (within one) the same number of each (folds=1: every pair in fold 0).
    Pairs come in random order (same and different interleaved), first < second in each.
    ValueError when fewer than two identities or no identity with two faces (no pair of one kind).
    """
    names = np.asarray(labels)
    if names.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {names.shape}")
    if isinstance(max_same_pairs, bool) or not isinstance(max_same_pairs, (int, np.integer)) or max_same_pairs < 1:
        raise ValueError(f"max_same_pairs must be an integer >= 1, got {max_same_pairs!r}")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 1:
        raise ValueError(f"folds must be an integer >= 1, got {folds!r}")
    rng = np.random.default_rng(seed)
    _, codes, sizes = np.unique(names, return_inverse=True, return_counts=True)
    if len(sizes) < 2:
        raise ValueError(f"need at least two identities to evaluate, found {len(sizes)}")
    if sizes.max() < 2:
        raise ValueError("every identity has one image: same-person pairs need at least one identity with two "
                         "images or more")
    order = np.argsort(codes.reshape(-1), kind="stable")  # faces grouped by identity, in index order
    ends = np.cumsum(sizes)
    starts = ends - sizes
    sizes64 = sizes.astype(np.int64)

    # same: pair number k -> its identity (by cumulative pair counts), then (a, b) within it
    per_identity = sizes64 * (sizes64 - 1) // 2
    cumulative = np.cumsum(per_identity)
    total_same = int(cumulative[-1])
    picked = np.sort(rng.choice(total_same, min(total_same, max_same_pairs), replace=False))
    identity = np.searchsorted(cumulative, picked, side="right")
    a, b = _decode_triangle(picked - (cumulative[identity] - per_identity[identity]), sizes64[identity])
    same_pairs = np.stack([order[starts[identity] + a], order[starts[identity] + b]], axis=1)

    # different: grouped position p pairs with every position after its identity's block
    n = len(names)
    position_identity = np.repeat(np.arange(len(sizes)), sizes)
    after = n - ends[position_identity]
    cumulative = np.cumsum(after)
    wanted = min(len(same_pairs), int(cumulative[-1]))
    picked = np.sort(rng.choice(int(cumulative[-1]), wanted, replace=False))
    p = np.searchsorted(cumulative, picked, side="right")
    q = ends[position_identity[p]] + (picked - (cumulative[p] - after[p]))
    different_pairs = np.stack([order[p], order[q]], axis=1)

    pairs = np.sort(np.concatenate([same_pairs, different_pairs]).reshape(-1, 2), axis=1).astype(np.int64)
    same = np.r_[np.ones(len(same_pairs), bool), np.zeros(len(different_pairs), bool)]
    fold = np.empty(len(pairs), np.int64)
    for kind in (same, ~same):
        rows = np.flatnonzero(kind)
        fold[rng.permutation(rows)] = np.arange(len(rows)) % folds
    shuffle = rng.permutation(len(pairs))
    return Pairs(pairs[shuffle, 0], pairs[shuffle, 1], same[shuffle], fold[shuffle])


def distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between every row of a (M, D) and every row of b (N, D): (M, N) float64.

    Computed as sqrt(|a|^2 + |b|^2 - 2 a.b) with one matrix product, so no (M, N, D) array is built.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    squared = (a64 * a64).sum(1)[:, None] + (b64 * b64).sum(1)[None, :] - 2.0 * (a64 @ b64.T)
    return np.sqrt(np.maximum(squared, 0.0))


def identification(gallery: np.ndarray, gallery_labels: Sequence, probes: np.ndarray,
                   probe_labels: Sequence, ranks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """Closed-set identification: fraction of probes whose identity is among the `rank` nearest
    gallery identities (nearest descriptor per identity). Returns {'rank1': .., 'rank5': ..}."""
    gallery_names, probe_names = np.asarray(gallery_labels), np.asarray(probe_labels)
    identities = np.unique(gallery_names)
    distances = distance_matrix(probes, gallery)
    per_identity = np.stack([distances[:, gallery_names == name].min(axis=1) for name in identities], axis=1)
    order = identities[np.argsort(per_identity, axis=1, kind="mergesort")]
    return {f"rank{r}": float(np.mean([label in row[:r] for label, row in zip(probe_names, order)])) for r in ranks}


def pairwise_precision_recall(true_labels: Sequence, cluster_labels: Sequence) -> dict[str, float]:
    """Pairwise precision/recall of a clustering (scikit-learn's pair_confusion_matrix): over all pairs
    put in one cluster, the fraction of the same identity (precision); over all same-identity pairs,
    the fraction put together (recall)."""
    from sklearn.metrics.cluster import pair_confusion_matrix

    # [[apart in both, joined but not the same identity], [same identity but split, joined rightly]]
    (_, false_joined), (false_split, together_right) = pair_confusion_matrix(np.asarray(true_labels),
                                                                              np.asarray(cluster_labels))
    put_together = together_right + false_joined
    same_identity = together_right + false_split
    precision = together_right / put_together if put_together else 1.0
    recall = together_right / same_identity if same_identity else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


def open_set_identification(known_distances: np.ndarray, known_correct: np.ndarray, unknown_distances: np.ndarray,
                            fpirs: Sequence[float] = (0.01, 0.1)) -> dict[str, dict[str, float]]:
    """Open-set identification: detection-and-identification rate (DIR) at false-positive
    identification rates (FPIR).

    known_distances / known_correct: for each probe of an enrolled person, the distance of the
    answer and whether the answer names the right person. unknown_distances: for each probe of a
    person not enrolled, the distance of the answer. For each FPIR the threshold t is the largest
    with mean(unknown < t) <= FPIR; DIR = mean(correct and known < t).
    Returns {"fpir_0.01": {"threshold": t, "fpir": .., "dir": ..}, ...}."""
    unknown = np.sort(np.asarray(unknown_distances, np.float64))
    known = np.asarray(known_distances, np.float64)
    correct = np.asarray(known_correct, bool)
    result = {}
    for fpir in fpirs:
        allowed = int(np.floor(fpir * len(unknown)))
        threshold = float(unknown[allowed]) if allowed < len(unknown) else float("inf")
        result[f"fpir_{fpir:g}"] = {"threshold": threshold, "fpir": float(np.mean(unknown < threshold)),
                                    "dir": float(np.mean(correct & (known < threshold)))}
    return result
