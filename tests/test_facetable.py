"""The face table: one schema (nulls for missing values, quality, error_kind), its version in the
Parquet metadata (newer refused, version 1 still read), the one PhotoFaces -> rows conversion, the
.npy + labels layout, error kinds."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import pytest

from pyfacedlib.errors import ERROR_KINDS, ImageError, error_kind, error_kind_of_message
from pyfacedlib.facetable import (
    SCHEMA_KEY,
    SCHEMA_VERSION,
    SCHEMA_VERSION_KEY,
    FaceTable,
    photo_batch,
    read_table,
    schema,
)
from pyfacedlib.photos import PhotoFaces

MODEL, SETTINGS = "m" * 64, "s" * 16


def _photos() -> list[PhotoFaces]:
    two = PhotoFaces("a.jpg", "f" * 64, np.array([[1, 2, 30, 40], [50, 60, 90, 99]]), np.array([0.5, 0.25]),
                     np.arange(20).reshape(2, 5, 2), np.stack([np.ones(128, np.float32), np.full(128, 2, np.float32)]))
    nothing = PhotoFaces("b.jpg", "e" * 64)
    broken = PhotoFaces("c.jpg", "", error="cannot read image c.jpg: cannot identify image file 'c.jpg'")
    failed = PhotoFaces("d.jpg", "d" * 64, error="face detection failed: RuntimeError: boom")
    return [two, nothing, broken, failed]


def test_rows_have_nulls_not_empty_strings(tmp_path: Path):
    import pyarrow.parquet as pq

    table = FaceTable.from_photos(_photos(), MODEL, SETTINGS, {"a.jpg": "Ann", "b.jpg": ""})
    assert list(table.face) == [0, 1, -1, -1, -1]
    # in memory: None for missing, never ""
    assert table.identity == ["Ann", "Ann", None, None, None]
    assert table.error[:3] == [None, None, None] and table.sha256[3] is None
    assert table.error_kind == [None, None, None, "unreadable", "detection_failed"]
    assert np.isnan(table.quality).all() and table.quality.dtype == np.float32
    path = tmp_path / "t.parquet"
    table.write_parquet(path)
    arrow = pq.read_table(path)
    assert arrow.schema.remove_metadata() == schema()
    frame = arrow.to_pandas()
    good = frame.face >= 0
    assert frame.error.isna()[good].all() and frame.error_kind.isna()[good].all()  # plain pandas sees nulls
    assert frame.identity.isna().tolist() == [False, False, True, True, True]
    assert frame.sha256.isna().tolist() == [False, False, False, True, False]
    assert frame.quality.isna().all() and arrow.schema.field("quality").type == "float"
    assert arrow.column("error_kind").to_pylist()[2:] == [None, "unreadable", "detection_failed"]
    for name, nullable in (("source_path", False), ("face", False), ("model_id", False), ("enrolled", False),
                           ("error", True), ("error_kind", True), ("identity", True), ("sha256", True)):
        assert arrow.schema.field(name).nullable is nullable, name
    back = FaceTable.read_parquet(path)
    assert back.identity == table.identity and back.error == table.error and back.error_kind == table.error_kind
    assert back.sha256 == table.sha256
    # "" given in memory (older callers) is stored as None
    assert FaceTable(["x"], [""], [0], np.zeros((1, 4)), [1.0], np.zeros((1, 5, 2)), np.zeros((1, 128)), [""], [""],
                     [False]).identity == [None]


def test_schema_version_is_written_and_a_newer_one_refused(tmp_path: Path):
    import pyarrow.parquet as pq

    path = tmp_path / "t.parquet"
    FaceTable.from_photos(_photos(), MODEL, SETTINGS).write_parquet(path)
    meta = pq.read_schema(path).metadata
    assert meta[SCHEMA_VERSION_KEY] == str(SCHEMA_VERSION).encode() and SCHEMA_VERSION == 2
    described = json.loads(meta[SCHEMA_KEY])
    assert [c["name"] for c in described] == schema().names
    assert {c["name"]: c["nullable"] for c in described}["error_kind"] is True
    newer = pq.read_table(path)
    newer = newer.replace_schema_metadata({**newer.schema.metadata, SCHEMA_VERSION_KEY: b"99"})
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pq.read_table(path), folder / "part-0.parquet")
    pq.write_table(newer, folder / "part-1.parquet")
    for target, named in ((folder / "part-1.parquet", "part-1.parquet"), (folder, "part-1.parquet")):
        with pytest.raises(ValueError, match=r"version 99 .*version 2") as caught:
            FaceTable.read_parquet(target)
        assert named in str(caught.value)
    with pytest.raises(ValueError, match="version 99"):
        read_table(folder, columns=["sha256"])


def _as_version_1(table):
    """A face table as pyfacedlib 1 wrote it: no version keys, no quality/error_kind, "" for missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    columns = {}
    for name in table.column_names:
        if name in ("quality", "error_kind"):
            continue
        column = table.column(name)
        if name in ("sha256", "error", "identity"):
            column = pc.fill_null(column, "")
        columns[name] = column
    meta = {k: v for k, v in table.schema.metadata.items() if not k.startswith(b"pyfacedlib.")}
    meta[b"pyfacedlib"] = json.dumps({**json.loads(meta[b"pyfacedlib"]), "format": 1}).encode()
    return pa.table(columns).replace_schema_metadata(meta)


def test_a_version_1_file_reads_with_nulls(tmp_path: Path):
    import pyarrow.parquet as pq

    table = FaceTable.from_photos(_photos(), MODEL, SETTINGS, {"a.jpg": "Ann"})
    table.metadata = {"settings": {"size": 150}}
    old = _as_version_1(table.to_arrow())
    assert "" in old.column("error").to_pylist() and SCHEMA_VERSION_KEY not in old.schema.metadata
    path = tmp_path / "v1.parquet"
    pq.write_table(old, path)
    arrow = read_table(path)
    assert arrow.schema.remove_metadata() == schema() and arrow.schema.metadata[SCHEMA_VERSION_KEY] == b"2"
    assert arrow.column("error").to_pylist()[:3] == [None, None, None]
    assert arrow.column("identity").to_pylist() == ["Ann", "Ann", None, None, None]
    assert arrow.column("error_kind").to_pylist() == [None, None, None, "unreadable", "detection_failed"]
    back = FaceTable.read_parquet(path)
    assert back.error == table.error and back.identity == table.identity and back.sha256 == table.sha256
    assert back.metadata["settings"] == {"size": 150}
    np.testing.assert_array_equal(back.embedding[:2], table.embedding[:2])


def test_photo_batch_is_the_one_conversion_and_chips_travel_in_it(lfw_dir: Path):
    import pyarrow as pa

    import pyfacedlib as pfd
    from pyfacedlib.align import AlignmentSettings
    from pyfacedlib.archive_ray import embed_chip_batch
    from pyfacedlib.photos import detect_photo

    settings = AlignmentSettings.for_photos()
    files = [str(p) for p in sorted(lfw_dir.glob("A*/*_0001.jpg"))[:3]]
    photos = [detect_photo(f, settings, hash_files=True) for f in files] + [PhotoFaces("x.jpg", error="gone")]
    embedder = pfd.FaceEmbedder()
    in_flight = photo_batch(photos, MODEL, settings.key(), chips=True)
    assert in_flight.schema.names == [*schema().names, "chip", "detector"]
    assert in_flight.column("embedding").null_count == 4 and in_flight.column("quality").null_count == 4
    assert in_flight.schema.field("chip").type == pa.binary(150 * 150 * 3)
    filled = embed_chip_batch(in_flight, embedder)
    assert filled.schema.remove_metadata() == schema()  # the in-flight columns are gone
    for p in photos:
        if p.chips is not None and len(p):
            p.descriptors = embedder.embed_chips(p.chips)
            p.quality = embedder.face_quality(p.scores, p.boxes, p.chips, p.descriptors, p.detector)
    direct = photo_batch(photos, MODEL, settings.key())
    assert direct.schema.remove_metadata() == schema()
    assert filled.column("quality").null_count == 1  # the unreadable photo's row
    np.testing.assert_allclose(np.array(filled.column("quality").to_pylist(), float),
                               np.array(direct.column("quality").to_pylist(), float), atol=1e-6)
    for name in schema().names:
        if name not in ("embedding", "quality"):
            assert filled.column(name).to_pylist() == direct.column(name).to_pylist(), name
    np.testing.assert_allclose(np.array([v for v in filled.column("embedding").to_pylist() if v]),
                               np.array([v for v in direct.column("embedding").to_pylist() if v]), atol=1e-6)
    # FaceTable.from_photos is photo_batch's rows
    table = FaceTable.from_photos(photos, MODEL, settings.key())
    assert table.to_arrow().column("source_path").to_pylist() == direct.column("source_path").to_pylist()
    assert table.error_kind[-1] == "unreadable"


def test_write_npy_layout(tmp_path: Path):
    photos = _photos()
    table = FaceTable.from_photos(photos, MODEL, SETTINGS, {"a.jpg": "Zoe"})
    extra = FaceTable.from_photos([PhotoFaces("e.jpg", "a" * 64, np.array([[0, 0, 9, 9]]), np.array([1.0]),
                                              np.zeros((1, 5, 2)), np.full((1, 128), 3, np.float32))],
                                  MODEL, SETTINGS, {"e.jpg": "Abe"})
    both = FaceTable.concat([table, extra], MODEL, SETTINGS)
    out = tmp_path / "npy" / "embeddings.npy"
    written = both.write_npy(out)
    assert written == [out, out.parent / "labels.npy", out.parent / "label_strings.npy"]
    vectors = np.load(out)
    assert vectors.shape == (3, 128) and vectors.dtype == np.float32 and list(vectors[:, 0]) == [1, 2, 3]
    labels, strings = np.load(out.parent / "labels.npy"), np.load(out.parent / "label_strings.npy")
    assert labels.dtype == np.int64 and list(labels) == [1, 1, 0] and list(strings) == ["Zoe", "Zoe", "Abe"]
    assert not list(out.parent.glob(".*"))  # atomic: no temporary left
    anonymous = tmp_path / "anon" / "faces.npy"
    assert FaceTable.from_photos(photos, MODEL, SETTINGS).write_npy(anonymous) == [anonymous]
    assert np.load(anonymous).shape == (2, 128) and sorted(p.name for p in anonymous.parent.iterdir()) == ["faces.npy"]


def test_error_kinds():
    assert ERROR_KINDS == ("unreadable", "transient", "detection_failed")
    assert error_kind(FileNotFoundError(errno.ENOENT, "No such file")) == "unreadable"
    assert error_kind(PermissionError(errno.EACCES, "Permission denied")) == "unreadable"
    assert error_kind(OSError(errno.EIO, "Input/output error")) == "transient"
    assert error_kind(MemoryError()) == "transient" and error_kind(MemoryError(), detecting=True) == "transient"
    assert error_kind(RuntimeError("dlib"), detecting=True) == "detection_failed"
    try:  # an ImageError is classified by what it wraps
        try:
            raise OSError(errno.EIO, "Input/output error")
        except OSError as exc:
            raise ImageError("cannot read image x.jpg") from exc
    except ImageError as wrapped:
        assert error_kind(wrapped) == "transient"
    assert error_kind(ImageError("cannot identify image file")) == "unreadable"
    assert error_kind_of_message(None) is None and error_kind_of_message("") is None
    assert error_kind_of_message("[Errno 2] No such file or directory: 'x'") == "unreadable"
    assert error_kind_of_message("[Errno 13] Permission denied: 'x'") == "unreadable"
    assert error_kind_of_message("cannot read image x: [Errno 5] Input/output error") == "transient"
    assert error_kind_of_message("face detection failed: MemoryError: ") == "transient"
    assert error_kind_of_message("face detection failed: RuntimeError: x") == "detection_failed"
    assert error_kind_of_message("cannot read image x: cannot identify image file") == "unreadable"


def test_update_table_treats_missing_identities_alike(tmp_path: Path):
    """A table read back (identity None) and the files listed with "" are the same: nothing redone."""
    from PIL import Image

    import pyfacedlib as pfd
    from pyfacedlib._system import file_sha256
    from pyfacedlib.align import AlignmentSettings
    from pyfacedlib.facetable import update_table

    for i in range(2):
        Image.new("RGB", (90, 70), (10 * i, 80, 20)).save(tmp_path / f"blank{i}.png")
    files = {str(tmp_path / f"blank{i}.png"): "" for i in range(2)}
    settings = AlignmentSettings.for_photos()
    embedder = pfd.FaceEmbedder()
    empty = FaceTable(model_id=file_sha256(embedder.model_path), settings_hash=settings.key())
    first, changes = update_table(empty, files, embedder, settings)
    assert len(changes.added) == 2 and first.identity == [None, None]
    first.write_parquet(tmp_path / "t.parquet")
    again, changes = update_table(FaceTable.read_parquet(tmp_path / "t.parquet"), files, embedder, settings)
    assert changes.unchanged == 2 and not changes.added and not changes.changed
