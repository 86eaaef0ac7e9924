"""Verification metrics against a straightforward independent implementation; identification, clustering."""
import numpy as np
import pytest

from pyfacedlib.clustering import chinese_whispers
from pyfacedlib.evaluate import identification, pairwise_precision_recall, verification


def naive_protocol(d, same, folds):
    """Plain loops: every midpoint between distinct training distances is a candidate threshold;
    the first (smallest) with the best training accuracy is applied to the held-out fold."""
    accuracies = []
    for f in sorted(set(folds)):
        train = [i for i in range(len(d)) if folds[i] != f]
        test = [i for i in range(len(d)) if folds[i] == f]
        values = sorted(set(d[i] for i in train))
        candidates = [values[0] - 1.0] + [(a + b) / 2 for a, b in zip(values, values[1:])] + [values[-1] + 1.0]
        best, best_t = -1, None
        for t in candidates:
            correct = sum((d[i] < t) == same[i] for i in train)
            if correct > best:
                best, best_t = correct, t
        accuracies.append(sum((d[i] < best_t) == same[i] for i in test) / len(test))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def naive_val(d, same, far_target):
    best = 0.0
    negatives, positives = sum(not s for s in same), sum(same)
    for t in sorted(set(d)):
        far = sum(1 for x, s in zip(d, same) if not s and x <= t) / negatives
        tar = sum(1 for x, s in zip(d, same) if s and x <= t) / positives
        if far <= far_target:
            best = max(best, tar)
    return best


def naive_auc(d, same):
    pos = [x for x, s in zip(d, same) if s]
    neg = [x for x, s in zip(d, same) if not s]
    wins = sum((p < n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def check_against_naive(d, same, folds):
    report = verification(d, same, fold_ids=folds)
    mean, std = naive_protocol(list(d), list(same), list(folds))
    assert report.accuracy_mean == pytest.approx(mean, abs=1e-12)
    assert report.accuracy_std == pytest.approx(std, abs=1e-12)
    assert report.accuracy_at_0_6 == pytest.approx(np.mean((d < 0.6) == same))
    assert report.val_at_far_1e_2 == pytest.approx(naive_val(list(d), list(same), 1e-2))
    assert report.val_at_far_1e_3 == pytest.approx(naive_val(list(d), list(same), 1e-3))
    assert report.auc == pytest.approx(naive_auc(list(d), list(same)))
    far = np.mean(d[~same] <= report.eer_threshold)
    frr = np.mean(d[same] > report.eer_threshold)
    assert abs(far - frr) <= 2.0 / min(same.sum(), (~same).sum()) + 1e-12
    assert len(report.fold_thresholds) == len(set(folds))
    return report


def test_synthetic_distances_match_the_naive_protocol():
    rng = np.random.default_rng(3)
    n = 400
    same = np.arange(n) % 2 == 0
    d = np.where(same, rng.normal(0.45, 0.1, n), rng.normal(0.75, 0.1, n)).round(3)  # rounding makes ties
    folds = np.arange(n) * 10 // n
    report = check_against_naive(d, same, folds)
    assert 0.85 < report.accuracy_mean < 0.99


def test_real_distances_match_the_naive_protocol(johns, embedder):
    chips, labels = johns
    desc = embedder.embed_chips(chips).astype(np.float64)
    i, j = np.triu_indices(len(chips), 1)
    pick = np.random.default_rng(1).choice(len(i), 500, replace=False)  # keeps the naive loops quick
    i, j = i[pick], j[pick]
    d = np.linalg.norm(desc[i] - desc[j], axis=1)
    same = labels[i] == labels[j]
    folds = np.random.default_rng(0).integers(0, 10, len(d))
    report = check_against_naive(d, same, folds)
    assert report.auc > 0.99


def test_input_forms_and_errors():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 8)), rng.normal(size=(20, 8))
    same = np.arange(20) % 2 == 0
    d = np.linalg.norm(a - b, axis=1)
    r1 = verification(d, same, folds=5)
    r2 = verification((a, b), same, folds=5)
    r3 = verification(np.stack([a, b], axis=1), same, folds=5)
    assert r1.accuracy_mean == r2.accuracy_mean == r3.accuracy_mean
    with pytest.raises(ValueError):
        verification(d, same[:-1])
    with pytest.raises(ValueError):
        verification(d, np.ones(20, bool))
    with pytest.raises(ValueError):
        verification(np.full(20, np.nan), same)


def test_identification_and_clustering_on_johns(johns, embedder, dlib_bin):
    chips, labels = johns
    desc = embedder.embed_chips(chips)
    gallery = [np.flatnonzero(labels == name)[0] for name in np.unique(labels)]
    probes = np.setdiff1d(np.arange(len(labels)), gallery)
    ranks = identification(desc[gallery], labels[gallery], desc[probes], labels[probes])
    assert ranks["rank1"] == 1.0 and ranks["rank5"] == 1.0
    clusters = chinese_whispers(desc, 0.6)
    assert len(set(clusters)) == 5
    scores = pairwise_precision_recall(labels, clusters)
    assert scores == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    theirs = dlib_bin.chinese_whispers_clustering([dlib_bin.vector(v.astype(float)) for v in desc], 0.6)
    assert pairwise_precision_recall(np.array(theirs), clusters)["f1"] == 1.0  # same partition as dlib's


def test_pairwise_precision_recall_by_hand():
    scores = pairwise_precision_recall(["a", "a", "b", "b"], [0, 0, 0, 1])
    # together: (0,1) a-a ok, (0,2) a-b, (1,2) a-b -> precision 1/3; same pairs (0,1),(2,3): recall 1/2
    assert scores["precision"] == pytest.approx(1 / 3) and scores["recall"] == pytest.approx(0.5)


def test_sample_pairs_draws_every_same_pair_and_as_many_different_ones():
    import itertools

    from pyfacedlib.evaluate import sample_pairs

    labels = np.array(list("aaabbcddddeef"))[np.random.default_rng(4).permutation(13)]
    pairs = sample_pairs(labels, seed=3)
    every_same = {(i, j) for i, j in itertools.combinations(range(len(labels)), 2) if labels[i] == labels[j]}
    drawn = list(zip(pairs.first.tolist(), pairs.second.tolist()))
    assert all(i < j for i, j in drawn) and len(set(drawn)) == len(drawn)  # no pair twice
    assert {p for p, s in zip(drawn, pairs.same) if s} == every_same
    assert (labels[pairs.first] == labels[pairs.second]).tolist() == pairs.same.tolist()
    assert (~pairs.same).sum() == pairs.same.sum() == len(every_same)  # balanced
    # stratified folds: every fold holds (within one) as many same and as many different pairs
    for kind in (pairs.same, ~pairs.same):
        counts = np.bincount(pairs.fold[kind], minlength=10)
        assert counts.max() - counts.min() <= 1
    again = sample_pairs(labels, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(pairs, again))  # seeded
    assert not np.array_equal(sample_pairs(labels, seed=4).first, pairs.first)
    capped = sample_pairs(labels, max_same_pairs=5, seed=0, folds=1)
    assert capped.same.sum() == 5 and (~capped.same).sum() == 5 and not capped.fold.any()
    assert set(zip(capped.first[capped.same].tolist(), capped.second[capped.same].tolist())) <= every_same


def test_sample_pairs_draws_different_pairs_uniformly_and_refuses_what_cannot_pair():
    from pyfacedlib.evaluate import sample_pairs

    labels = np.array([0, 0, 1, 2])  # 1 same pair; 5 possible different pairs, one drawn each time
    drawn = [tuple(int(v) for v in np.r_[p.first[~p.same], p.second[~p.same]])
             for p in (sample_pairs(labels, seed=s, folds=1) for s in range(2000))]
    counts = np.array([drawn.count(pair) for pair in sorted(set(drawn))])
    assert len(counts) == 5 and counts.min() > 300  # uniform: 400 expected each
    big = sample_pairs(np.r_[np.zeros(20_000, int), np.arange(1, 11)], max_same_pairs=1000)  # no n^2 listing
    assert big.same.sum() == 1000 and (~big.same).sum() == 1000
    with pytest.raises(ValueError, match="two identities"):
        sample_pairs(["a", "a", "a"])
    with pytest.raises(ValueError, match="one image"):
        sample_pairs(["a", "b", "c"])


def test_the_old_pair_samplers_are_the_new_one():
    from pyfacedlib import bench
    from pyfacedlib._finetune import validation_pairs
    from pyfacedlib.evaluate import sample_pairs

    assert bench.folder_pairs is sample_pairs
    labels = np.repeat(np.arange(6), 4)
    with pytest.warns(DeprecationWarning, match="sample_pairs"):
        first, second, same = validation_pairs(labels, seed=2)
    expected = sample_pairs(labels, 3000, 2, folds=1)
    assert np.array_equal(first, expected.first) and np.array_equal(same, expected.same)
