"""Nearest-descriptor search: exact (numpy + BLAS) for small collections, FAISS for large ones.

Distances are always dlib's Euclidean distances (FAISS's L2 indexes return *squared* distances;
they are converted here, so a threshold of 0.6 means 0.6 everywhere).
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import _atomic
from ._config import option
from ._native import DESCRIPTOR_SIZE

KINDS = ("auto", "exact", "flat", "hnsw", "ivf", "ivfpq")
# Above this many descriptors kind="auto" builds an approximate (HNSW) index. Measured with
# benchmarks/search_1m.py on 2 cores at 1M descriptors: exact search 30 ms a query one at a time
# (8 ms batched), HNSW32 (efSearch 128) 0.37 ms with recall@1 1.000 — but building it takes
# ~120 s per million (~4,000 exact queries' worth). Up to 1M, exact is the better default for an
# index built when a gallery is loaded; above, exact grows to 0.3 s a query at 10M.
AUTO_APPROXIMATE_FROM = 1_000_000
_BLOCK = 1 << 16


@dataclass(frozen=True)
class IndexSettings:
    """How an approximate index is built and searched.

    hnsw_m: graph degree; hnsw_ef_construction / hnsw_ef_search: candidate list sizes when building /
    searching (larger = better recall, slower). ivf_lists: inverted lists (None = 4 * sqrt(N));
    ivf_probe: lists visited per query. pq_bytes: code size of "ivfpq".
    """

    hnsw_m: int = option(32, "hnsw: graph degree")
    hnsw_ef_construction: int = option(80, "hnsw: candidate list size while building (larger: better recall)")
    hnsw_ef_search: int = option(128, "hnsw: candidate list size while searching (larger: better recall, slower)")
    ivf_lists: int | None = option(None, "ivf/ivfpq: inverted lists (default: 4 x sqrt(N))")
    ivf_probe: int = option(32, "ivf/ivfpq: lists visited per query")
    pq_bytes: int = option(32, "ivfpq: bytes per compressed descriptor (the scan; distances stay exact)")


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def _as_queries(queries: np.ndarray) -> np.ndarray:
    q = np.asarray(queries, np.float32)
    if q.ndim == 1:
        q = q[None]
    if q.ndim != 2 or q.shape[1] != DESCRIPTOR_SIZE:
        raise ValueError(f"expected descriptors shaped (128,) or (N, 128), got {np.asarray(queries).shape}")
    if not np.isfinite(q).all():
        raise ValueError("descriptors contain NaN or infinity")
    return np.ascontiguousarray(q)


class DescriptorIndex:
    """k-nearest-descriptor search over an (N, 128) array.

    kind: "exact" (numpy, blocked float32 GEMM, exact distances re-computed in float64), "flat"
    (FAISS IndexFlatL2, exact), "hnsw" (FAISS HNSW graph, approximate), "ivf" (FAISS IVF with flat
    lists, approximate), "ivfpq" (IVF over product-quantised codes: the scan reads 32 bytes a face;
    the candidates' distances are re-computed exactly), or "auto" (exact below AUTO_APPROXIMATE_FROM
    descriptors, HNSW above when faiss-cpu is installed; without it, exact with a warning).
    """

    def __init__(self, descriptors: np.ndarray, kind: str = "auto", settings: IndexSettings | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"index kind must be one of {KINDS}, got {kind!r}")
        self.descriptors = _as_queries(descriptors) if len(descriptors) else np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        self.settings = settings or IndexSettings()
        automatic = kind == "auto"
        if automatic:
            kind = "hnsw" if len(self.descriptors) >= AUTO_APPROXIMATE_FROM else "exact"
        if kind != "exact" and _faiss() is None:
            if not automatic:
                raise ImportError(f"index kind {kind!r} needs FAISS: pip install faiss-cpu")
            warnings.warn("faiss-cpu is not installed: searching exactly (slow on large collections)", stacklevel=2)
            kind = "exact"
        self.kind = kind
        self._norms = (self.descriptors.astype(np.float64) ** 2).sum(1).astype(np.float32)
        self._faiss_index = self._build() if kind != "exact" else None
        self.info: dict = {}

    def _build(self):
        faiss = _faiss()
        n = len(self.descriptors)
        if self.kind == "flat":
            index = faiss.IndexFlatL2(DESCRIPTOR_SIZE)
        elif self.kind == "hnsw":
            index = faiss.IndexHNSWFlat(DESCRIPTOR_SIZE, self.settings.hnsw_m)
            index.hnsw.efConstruction = self.settings.hnsw_ef_construction
            index.hnsw.efSearch = self.settings.hnsw_ef_search
        else:
            lists = self.settings.ivf_lists or max(1, min(int(4 * np.sqrt(max(n, 1))), max(n // 39, 1)))
            if self.kind == "ivfpq" and n < 256 * 39:
                raise ValueError(f"an ivfpq index needs at least {256 * 39} descriptors to train, got {n}")
            quantizer = faiss.IndexFlatL2(DESCRIPTOR_SIZE)
            index = (faiss.IndexIVFPQ(quantizer, DESCRIPTOR_SIZE, lists, self.settings.pq_bytes, 8)
                     if self.kind == "ivfpq" else faiss.IndexIVFFlat(quantizer, DESCRIPTOR_SIZE, lists))
            if n:
                index.train(self.descriptors)
            index.nprobe = min(self.settings.ivf_probe, lists)
        if n:
            index.add(self.descriptors)
        return index

    def __len__(self) -> int:
        return len(self.descriptors)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the index (descriptors included)."""
        size = self.descriptors.nbytes + self._norms.nbytes
        if self._faiss_index is not None:
            faiss = _faiss()
            size += len(faiss.serialize_index(self._faiss_index))
        return size

    def search(self, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k nearest descriptors of each query: (distances (Q, k) float64 Euclidean, ascending;
        indices (Q, k) int64). Fewer than k stored: missing columns have index -1 and distance inf."""
        q = _as_queries(queries)
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        n = len(self.descriptors)
        distances = np.full((len(q), k), np.inf)
        indices = np.full((len(q), k), -1, np.int64)
        if n == 0 or len(q) == 0:
            return distances, indices
        if self._faiss_index is not None:
            squared, found = self._faiss_index.search(q, min(k, n))
            found = found.astype(np.int64)
        else:
            found = self._exact_candidates(q, min(k, n))
        valid = found >= 0
        exact = np.where(valid, np.linalg.norm(
            self.descriptors[np.where(valid, found, 0)].astype(np.float64) - q[:, None, :].astype(np.float64),
            axis=2), np.inf)
        order = np.argsort(exact, axis=1, kind="stable")
        width = found.shape[1]
        distances[:, :width] = np.take_along_axis(exact, order, 1)
        indices[:, :width] = np.where(np.isfinite(distances[:, :width]), np.take_along_axis(found, order, 1), -1)
        return distances, indices

    def _exact_candidates(self, q: np.ndarray, k: int) -> np.ndarray:
        """Indices of the k nearest rows by squared distance, blocks of the collection at a time."""
        q_norms = (q.astype(np.float64) ** 2).sum(1).astype(np.float32)[:, None]
        best_d = np.full((len(q), 0), np.inf, np.float32)
        best_i = np.zeros((len(q), 0), np.int64)
        for start in range(0, len(self.descriptors), _BLOCK):
            block = self.descriptors[start:start + _BLOCK]
            squared = q_norms + self._norms[None, start:start + _BLOCK] - 2.0 * (q @ block.T)
            take = min(k, squared.shape[1])
            part = np.argpartition(squared, take - 1, axis=1)[:, :take]
            best_d = np.concatenate([best_d, np.take_along_axis(squared, part, 1)], axis=1)
            best_i = np.concatenate([best_i, part + start], axis=1)
            if best_d.shape[1] > k:
                keep = np.argpartition(best_d, k - 1, axis=1)[:, :k]
                best_d, best_i = np.take_along_axis(best_d, keep, 1), np.take_along_axis(best_i, keep, 1)
        return best_i

    def save(self, path: str | os.PathLike, **info) -> None:
        """Writes the index (kind, settings, descriptors, FAISS structure, and `info`: JSON values
        the caller wants kept with it) to one .npz file, atomically."""
        import io
        import json
        from dataclasses import asdict

        arrays = {"descriptors": self.descriptors,
                  "meta": np.frombuffer(json.dumps({"kind": self.kind, "settings": asdict(self.settings),
                                                    "info": info}).encode(), np.uint8)}
        if self._faiss_index is not None:
            arrays["faiss"] = _faiss().serialize_index(self._faiss_index)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        _atomic.write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> DescriptorIndex:
        """Reads an index written by save(). Everything in the file is checked before it is used:
        the descriptors' shape, the kind and settings, and the FAISS structure (one faiss can read,
        of the kind's class, holding as many 128-D vectors as there are descriptors); anything
        else raises ValueError naming the file."""
        import json

        if not Path(path).is_file():
            raise FileNotFoundError(f"index file not found: {path}")
        try:
            data = np.load(path, allow_pickle=False)
            meta = json.loads(bytes(data["meta"]).decode())
            descriptors = data["descriptors"]
            blob = data["faiss"] if "faiss" in data else None
            kind, settings, info = meta["kind"], IndexSettings(**meta["settings"]), meta.get("info", {})
        except (ValueError, KeyError, OSError, TypeError, AttributeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path} is not a pyfacedlib index: {exc}") from exc
        if kind not in KINDS or kind == "auto":
            raise ValueError(f"{path} is not a pyfacedlib index: unknown kind {kind!r}")
        if descriptors.ndim != 2 or descriptors.shape[1] != DESCRIPTOR_SIZE or descriptors.dtype.kind != "f":
            raise ValueError(f"{path}: descriptors must be (N, {DESCRIPTOR_SIZE}) floats, got {descriptors.dtype} "
                             f"{descriptors.shape}")
        index = cls.__new__(cls)
        index.descriptors = np.ascontiguousarray(descriptors, np.float32)
        index.settings = settings
        index.kind = kind
        index.info = info
        index._norms = (index.descriptors.astype(np.float64) ** 2).sum(1).astype(np.float32)
        index._faiss_index = None
        if (blob is None) != (kind == "exact"):
            raise ValueError(f"{path}: a {kind!r} index {'without' if blob is None else 'with'} a FAISS structure")
        if blob is not None:
            index._faiss_index = _checked_faiss(blob, kind, len(index.descriptors), path)
        return index


# the FAISS class each kind is built as (DescriptorIndex._build)
_FAISS_CLASSES = {"flat": "IndexFlatL2", "hnsw": "IndexHNSWFlat", "ivf": "IndexIVFFlat", "ivfpq": "IndexIVFPQ"}


def _checked_faiss(blob: np.ndarray, kind: str, count: int, path: str | os.PathLike):
    """The FAISS index serialised in `blob`, checked to be of `kind`'s class, over 128-D vectors, holding
    `count` of them (the descriptors it was built from); ValueError naming the file otherwise."""
    faiss = _faiss()
    if faiss is None:
        raise ImportError(f"{path} holds a FAISS index: pip install faiss-cpu")
    if blob.dtype != np.uint8 or blob.ndim != 1 or not blob.size:
        raise ValueError(f"{path}: its FAISS structure is not a serialised index ({blob.dtype} {blob.shape})")
    try:
        index = faiss.deserialize_index(np.ascontiguousarray(blob))  # of its own class already
    except Exception as exc:  # faiss raises RuntimeError for a blob it cannot read
        raise ValueError(f"{path}: its FAISS structure cannot be read ({type(exc).__name__}: {exc})") from exc
    expected = getattr(faiss, _FAISS_CLASSES[kind])
    if type(index) is not expected:
        raise ValueError(f"{path}: a {kind!r} index holds a FAISS {type(index).__name__}, not {expected.__name__}")
    if index.d != DESCRIPTOR_SIZE or index.ntotal != count:
        raise ValueError(f"{path}: its FAISS structure holds {index.ntotal} vectors of {index.d} dimensions, but the "
                         f"file has {count} descriptors of {DESCRIPTOR_SIZE}")
    if kind == "hnsw" and index.hnsw.levels.size() != count:
        raise ValueError(f"{path}: its HNSW graph has {index.hnsw.levels.size()} nodes for {count} descriptors")
    return index
