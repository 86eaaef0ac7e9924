"""The one container for aligned faces of a dataset (FaceSet) and its identity mini-batches.

A FaceSet is aligned 150x150 chips with, for each, its identity, the file it came from and how it
was aligned, plus what was left out and why. The chip cache makes them from images
(pyfacedlib.chipcache.load_faces, the one way in); conversion calibrates on them, fine-tuning trains
and validates on them, benchmarks evaluate them.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

import numpy as np

from ._native import CHIP_SIZE, core

__all__ = ["CHIP_SIZE", "ChipRecord", "FaceInput", "FaceSet", "identity_batches"]

if TYPE_CHECKING:
    from .datasets import IdentityDataset



@dataclass
class ChipRecord:
    """How one source image was aligned (as the chip cache's manifest stores it)."""

    source: str
    sha256: str
    status: str                      # 'detected', 'detected_cnn' (fallback detector), 'fallback' (centred box),
                                     # 'skipped'
    reason: str = ""
    box: list[int] = field(default_factory=list)
    landmarks: list[list[int]] = field(default_factory=list)
    faces_found: int = 0


@dataclass
class FaceSet:
    """Aligned chips (N, 150, 150, 3) uint8, each with its identity, source file and alignment record,
    and what was left out: `skipped` images (path -> why no chip) and `skipped_identities` (name -> why)."""

    chips: np.ndarray
    labels: np.ndarray                                      # (N,) identity names; "" where unknown
    sources: list[str] = field(default_factory=list)        # file of each chip; "" for chips given as arrays
    records: list[ChipRecord] = field(default_factory=list)  # one per chip when made by the chip cache, else empty
    skipped: dict[str, str] = field(default_factory=dict)
    skipped_identities: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.labels = np.asarray([str(v) for v in self.labels]) if len(self.labels) else np.zeros(0, "<U1")
        if not self.sources:
            self.sources = [""] * len(self.chips)
        if len(self.labels) != len(self.chips) or len(self.sources) != len(self.chips) or \
                (self.records and len(self.records) != len(self.chips)):
            raise ValueError(f"{len(self.chips)} chips but {len(self.labels)} labels, {len(self.sources)} sources "
                             f"and {len(self.records)} records")

    @classmethod
    def from_chips(cls, chips: np.ndarray, labels: Sequence | None = None) -> FaceSet:
        """Ready chips (validated as the embedder validates them), with labels or none."""
        from .embedder import as_chips

        array = as_chips(chips)
        return cls(array, np.asarray(labels if labels is not None else [""] * len(array)))

    def __len__(self) -> int:
        return len(self.chips)

    @property
    def identities(self) -> list[str]:
        """Identity names, sorted."""
        return sorted(set(self.labels.tolist()))

    def take(self, indices: Sequence[int] | np.ndarray) -> FaceSet:
        """The faces at `indices` (an index array or boolean mask), in that order; what was skipped is kept."""
        index = np.flatnonzero(indices) if np.asarray(indices).dtype == bool else np.asarray(indices, np.int64)
        return FaceSet(self.chips[index], self.labels[index], [self.sources[i] for i in index],
                       [self.records[i] for i in index] if self.records else [], self.skipped, self.skipped_identities)

    def subset(self, identities: Sequence[str]) -> FaceSet:
        """Only the faces of `identities`."""
        return self.take(np.isin(self.labels, list(identities)))

    def with_min_images(self, minimum: int = 2) -> FaceSet:
        """Only identities with at least `minimum` faces; the others are added to skipped_identities."""
        names, counts = np.unique(self.labels, return_counts=True)
        too_few = {str(n): f"{c} image(s); at least {minimum} are needed" for n, c in zip(names, counts) if c < minimum}
        kept = self.take(~np.isin(self.labels, list(too_few)))
        kept.skipped_identities = {**self.skipped_identities, **too_few}
        return kept

    @property
    def fallbacks(self) -> list[str]:
        """Images where no detector found a face (aligned in the centred box instead)."""
        return [r.source for r in self.records if r.status == "fallback"]

    @property
    def cnn_rescued(self) -> list[str]:
        """Images the primary detector missed and dlib's CNN detector found."""
        return [r.source for r in self.records if r.status == "detected_cnn"]


def identity_batches(labels: Sequence[str], identities: int = 5, per_identity: int = 5,
                     seed: int = 0) -> list[np.ndarray]:
    """Disjoint index batches of `identities` distinct identities x `per_identity` faces each (dlib's
    metric-learning mini-batches: positive and negative pairs in every batch), every face at most once.

    Drawn by the C++ sampler that also draws the training batches (cpp/sampler.h): each identity is
    cut into groups of `per_identity` faces, and every batch takes one group from each of the
    `identities` identities with the most groups left; with fewer such identities, batches are
    consecutive runs of the shuffled faces.
    """
    ids = {name: i for i, name in enumerate(sorted(set(labels)))}
    batches = core.identity_batches([ids[name] for name in labels], identities, per_identity, seed)
    return [np.asarray(batch, np.int64) for batch in batches]


FaceInput = Union[FaceSet, np.ndarray, tuple, str, os.PathLike, "IdentityDataset"]


def __getattr__(name: str):
    """faces.load_faces moved to pyfacedlib.chipcache (the way in is a cache over alignment, which
    sits above this container module): the old name still works, with a DeprecationWarning. It is
    looked up at call time only, so this module imports nothing above it."""
    if name == "load_faces":
        import importlib
        import warnings

        warnings.warn("pyfacedlib.faces.load_faces moved: use pyfacedlib.load_faces (pyfacedlib.chipcache)",
                      DeprecationWarning, stacklevel=2)
        return importlib.import_module(".chipcache", __package__).load_faces
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

