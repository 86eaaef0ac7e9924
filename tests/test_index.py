"""Descriptor search (exact and FAISS) against a brute-force reference, and the face table format."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pyfacedlib.evaluate import distance_matrix
from pyfacedlib.facetable import FaceTable, schema
from pyfacedlib.index import DescriptorIndex, IndexSettings


@pytest.fixture(scope="module")
def collection(johns) -> tuple[np.ndarray, np.ndarray]:
    """Real johns descriptors and 2,000 perturbed copies; queries near them."""
    import pyfacedlib as pfd

    base = pfd.FaceEmbedder().embed_chips(johns[0])
    rng = np.random.default_rng(1)
    copies = base[rng.integers(0, len(base), 2000)] + rng.normal(0, 0.03, (2000, 128)).astype(np.float32)
    data = np.concatenate([base, copies])
    queries = base[rng.integers(0, len(base), 40)] + rng.normal(0, 0.03, (40, 128)).astype(np.float32)
    return data, queries


def _faiss_or_skip():
    from conftest import skip_or_fail

    try:
        import faiss  # noqa: F401
    except ImportError:
        skip_or_fail("faiss-cpu (a test dependency) is not installed")


def test_exact_index_equals_brute_force(collection):
    data, queries = collection
    distances, found = DescriptorIndex(data, "exact").search(queries, 7)
    reference = distance_matrix(queries, data)
    np.testing.assert_allclose(distances, np.sort(reference, axis=1)[:, :7], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(reference, found, 1), distances, atol=1e-5)


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_indexes_return_true_distances(collection, kind):
    _faiss_or_skip()
    data, queries = collection
    exact_d, exact_i = DescriptorIndex(data, "exact").search(queries, 5)
    index = DescriptorIndex(data, kind, IndexSettings(ivf_lists=16, ivf_probe=16))
    distances, found = index.search(queries, 5)
    assert np.mean(found[:, 0] == exact_i[:, 0]) >= (1.0 if kind != "hnsw" else 0.95)
    # Euclidean, not FAISS's squared L2: the same numbers as the exact search where they agree
    same = found[:, 0] == exact_i[:, 0]
    np.testing.assert_allclose(distances[same, 0], exact_d[same, 0], atol=1e-5)


def test_index_edge_cases_and_save_load(collection, tmp_path: Path):
    data, queries = collection
    small = DescriptorIndex(data[:3], "exact")
    d, i = small.search(queries[0], 5)
    assert d.shape == (1, 5) and list(i[0, 3:]) == [-1, -1] and np.isinf(d[0, 3:]).all()
    empty = DescriptorIndex(np.zeros((0, 128), np.float32), "exact")
    assert (empty.search(queries, 2)[1] == -1).all()
    with pytest.raises(ValueError, match="128"):
        small.search(np.zeros(5), 1)
    with pytest.raises(ValueError, match="NaN"):
        small.search(np.full(128, np.nan), 1)
    with pytest.raises(ValueError, match="kind"):
        DescriptorIndex(data, "annoy")
    path = tmp_path / "idx.npz"
    small.save(path)
    again = DescriptorIndex.load(path)
    np.testing.assert_array_equal(again.search(queries, 3)[1], small.search(queries, 3)[1])
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a pyfacedlib index"):
        DescriptorIndex.load(tmp_path / "junk.npz")


def _tampered(source: Path, target: Path, **changes) -> Path:
    """A copy of the index file `source` with some of its arrays replaced."""
    with np.load(source, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    arrays.update(changes)
    np.savez(target, **arrays)
    return target


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_a_tampered_faiss_blob_is_refused_naming_the_file(collection, tmp_path: Path, kind):
    """The FAISS structure in an index .npz is checked before use: as many vectors as descriptors,
    128-D, of the kind's class, readable by faiss; anything else is a ValueError naming the file."""
    _faiss_or_skip()
    import faiss

    data, queries = collection
    saved = tmp_path / "idx.npz"
    DescriptorIndex(data[:300], kind).save(saved)
    assert DescriptorIndex.load(saved).search(queries, 1)[1].shape == (40, 1)
    with np.load(saved) as original:
        blob = original["faiss"]
    # fewer descriptors than the FAISS structure holds: search would index past the array
    short = _tampered(saved, tmp_path / "short.npz", descriptors=data[:200])
    with pytest.raises(ValueError, match=r"short\.npz.*300 vectors.*200 descriptors"):
        DescriptorIndex.load(short)
    # a blob faiss cannot read
    broken = blob.copy()
    broken[8:40] = 0xFF
    for name, bad in (("garbled", broken), ("truncated", blob[: len(blob) // 2]), ("words", blob.view(np.int8))):
        with pytest.raises(ValueError, match=name):
            DescriptorIndex.load(_tampered(saved, tmp_path / f"{name}.npz", faiss=bad))
    # another dimension, or another class than the kind says
    other = faiss.serialize_index(faiss.IndexFlatL2(64) if kind == "hnsw" else faiss.IndexHNSWFlat(128, 8))
    with pytest.raises(ValueError, match="other_class"):
        DescriptorIndex.load(_tampered(saved, tmp_path / "other_class.npz", faiss=other))
    wide = faiss.IndexFlatL2(64)
    wide.add(np.zeros((300, 64), np.float32))
    meta = json.dumps({"kind": "flat", "settings": {}, "info": {}}).encode()
    with pytest.raises(ValueError, match=r"other_dim\.npz.*64 dimensions"):
        DescriptorIndex.load(_tampered(saved, tmp_path / "other_dim.npz", faiss=faiss.serialize_index(wide),
                                       meta=np.frombuffer(meta, np.uint8)))


def test_face_table_round_trip_keeps_no_face_rows(tmp_path: Path):
    import pyarrow.parquet as pq

    from pyfacedlib.photos import PhotoFaces

    face = PhotoFaces("a.jpg", "f" * 64, np.array([[1, 2, 30, 40]]), np.array([0.5]), np.arange(10).reshape(1, 5, 2),
                      np.ones((1, 128), np.float32))
    nothing = PhotoFaces("b.jpg", "e" * 64)
    broken = PhotoFaces("c.jpg", "", error="cannot identify image file")
    table = FaceTable.from_photos([face, nothing, broken], "m" * 64, "s" * 16, {"a.jpg": "Ann"})
    assert list(table.face) == [0, -1, -1] and table.identity == ["Ann", None, None]
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    arrow = pq.read_table(path)
    assert arrow.schema.remove_metadata() == schema()
    assert arrow.column("embedding").null_count == 2 and arrow.column("box").to_pylist()[1] is None
    back = FaceTable.read_parquet(path)
    np.testing.assert_array_equal(back.embedding[0], np.ones(128, np.float32))
    assert np.isnan(back.embedding[1:]).all() and back.error[2] == "cannot identify image file"
    assert back.model_id == "m" * 64 and back.settings_hash == "s" * 16
    with pytest.raises(ValueError, match="descriptors"):
        FaceTable.from_photos([PhotoFaces("x.jpg", boxes=np.zeros((1, 4), np.int64))], "m", "s")
