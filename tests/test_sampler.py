"""Disjoint evaluation batches (cpp/sampler.h, the one place batches are drawn)."""
import numpy as np
import pytest

from pyfacedlib.faces import identity_batches


def test_batches_are_disjoint_identity_groups():
    labels = [name for name, count in [("a", 11), ("b", 7), ("c", 5), ("d", 10), ("e", 3)] for _ in range(count)]
    batches = identity_batches(labels, identities=3, per_identity=2, seed=4)
    flat = np.concatenate(batches)
    assert len(flat) == len(set(flat.tolist())), "a face appears in two batches"
    for batch in batches:
        assert len(batch) == 6
        names = [labels[i] for i in batch]
        assert len(set(names)) == 3 and all(names.count(n) == 2 for n in set(names))
    assert identity_batches(labels, 3, 2, seed=4)[0].tolist() == batches[0].tolist()  # seeded
    # as many batches as the rule allows: groups of 2 per identity, three identities with most groups left
    groups, expected = [11 // 2, 7 // 2, 5 // 2, 10 // 2, 3 // 2], 0
    while sum(g > 0 for g in groups) >= 3:
        groups.sort(reverse=True)
        groups[:3] = [g - 1 for g in groups[:3]]
        expected += 1
    assert len(batches) == expected


def test_too_few_identities_fall_back_to_runs_of_shuffled_faces():
    labels = ["a"] * 6 + ["b"] * 6
    batches = identity_batches(labels, identities=5, per_identity=2, seed=0)
    assert [len(b) for b in batches] == [10]
    with pytest.raises(ValueError):
        identity_batches(labels, identities=0, per_identity=2)
