"""Tables of faces: one row per face found in a photo (or per photo without a face, or unreadable),
with its descriptor and how it was made, stored as Parquet.

Galleries, exports and the archive pipeline (local and Ray) all read and write this one schema;
`photo_batch` is the one conversion from pyfacedlib.photos results to rows.

=============  ==========================  ========  ==========================================
column         type                        nullable  meaning
=============  ==========================  ========  ==========================================
source_path    string                      no        the photo (or video) file
sha256         string                      yes       sha256 of the file's bytes (null: an in-memory image)
face           int32                       no        face number in the photo; -1: no face (or unreadable)
box            fixed_size_list<int64>[4]   yes       left, top, right, bottom (null when face = -1)
score          float64                     yes       detector score (null when face = -1)
landmarks      fixed_size_list<int64>[10]  yes       5 points x, y (null when face = -1)
embedding      fixed_size_list<float>[128] yes       the 128-D descriptor, float32 (null when face = -1)
quality        float32                     yes       pyfacedlib.quality's score in [0, 1] (null when
                                                     face = -1, for CNN-detector faces, in older files)
model_id       string                      no        sha256 of the face model file that made the embedding
settings_hash  string                      no        AlignmentSettings.key() of the detection/alignment
error          string                      yes       why the file could not be used (null when it could)
error_kind     string                      yes       "unreadable", "transient" or "detection_failed"
                                                     (pyfacedlib.errors.ERROR_KINDS; null when no error)
identity       string                      yes       the person (null when not known)
enrolled       bool                        no        a gallery uses this face for its identity
=============  ==========================  ========  ==========================================

A missing value is null, never "": `df.error.isna()` selects the good rows. Between the Ray stages
of an archive the same schema travels with one more column, `chip` (fixed_size_binary, the aligned
150x150x3 uint8 chip; null when face = -1), from which the embedding stage fills `embedding` and
`quality`, and `detector` (which detector found the face).

Parquet metadata: b"pyfacedlib.schema_version" (SCHEMA_VERSION, as ASCII digits) and
b"pyfacedlib.schema" (JSON: the columns, their types and nullability), checked on read: a file of a
newer version is refused with a ValueError naming it; version 1 files (no version key, "" for
missing strings, no quality / error_kind columns) still read, converted (read_table). Key
b"pyfacedlib" holds JSON with the alignment settings and, for a gallery, its threshold and
enrolment rule.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import _atomic
from .errors import error_kind_of_message

if TYPE_CHECKING:
    import pyarrow as pa

    from .align import AlignmentSettings
    from .embedder import FaceEmbedder

DESCRIPTOR_SIZE = 128
METADATA_KEY = b"pyfacedlib"
SCHEMA_VERSION = 2
SCHEMA_VERSION_KEY = b"pyfacedlib.schema_version"
SCHEMA_KEY = b"pyfacedlib.schema"
FORMAT_VERSION = SCHEMA_VERSION  # the "format" entry of the b"pyfacedlib" JSON (older name)
OPTIONAL_STRINGS = ("sha256", "error", "error_kind", "identity")
CHIP_COLUMN = "chip"
# in flight beside `chip`: which detector found the face (quality is computed for HOG faces only)
DETECTOR_COLUMN = "detector"
IN_FLIGHT_COLUMNS = (CHIP_COLUMN, DETECTOR_COLUMN)
# a column of optional strings in memory: None for missing ("" given is stored as None)
OptionalStrings = list[str] | list[str | None]


def schema(chip_bytes: int | None = None) -> pa.Schema:
    """The pyarrow schema of a face table (with its version metadata). chip_bytes: the in-flight
    form between the archive's detection and embedding stages, with a `chip` column of that width."""
    import pyarrow as pa

    fields = [
        pa.field("source_path", pa.string(), nullable=False), pa.field("sha256", pa.string()),
        pa.field("face", pa.int32(), nullable=False), pa.field("box", pa.list_(pa.int64(), 4)),
        pa.field("score", pa.float64()), pa.field("landmarks", pa.list_(pa.int64(), 10)),
        pa.field("embedding", pa.list_(pa.float32(), DESCRIPTOR_SIZE)), pa.field("quality", pa.float32()),
        pa.field("model_id", pa.string(), nullable=False), pa.field("settings_hash", pa.string(), nullable=False),
        pa.field("error", pa.string()), pa.field("error_kind", pa.string()), pa.field("identity", pa.string()),
        pa.field("enrolled", pa.bool_(), nullable=False),
    ]
    if chip_bytes is not None:
        fields += [pa.field(CHIP_COLUMN, pa.binary(chip_bytes)), pa.field(DETECTOR_COLUMN, pa.string())]
    described = [{"name": f.name, "type": str(f.type), "nullable": f.nullable} for f in fields
                 if f.name not in IN_FLIGHT_COLUMNS]
    return pa.schema(fields, metadata={SCHEMA_VERSION_KEY: str(SCHEMA_VERSION).encode(),
                                       SCHEMA_KEY: json.dumps(described).encode()})


def schema_version(arrow_schema: pa.Schema) -> int:
    """The schema version an Arrow/Parquet schema's metadata declares (1: no version key)."""
    raw = (arrow_schema.metadata or {}).get(SCHEMA_VERSION_KEY)
    return int(raw) if raw else 1


def _check_version(arrow_schema: pa.Schema, source: object) -> int:
    version = schema_version(arrow_schema)
    if version > SCHEMA_VERSION:
        raise ValueError(f"{source}: face table schema version {version} is newer than this pyfacedlib reads "
                         f"(version {SCHEMA_VERSION}): upgrade pyfacedlib to read it")
    return version


def upgrade(table: pa.Table, source: object = "face table") -> pa.Table:
    """`table` (read from a file of any version this pyfacedlib knows) in the current schema: columns
    it lacks that the current schema may hold null are added as nulls (error_kind derived from
    error); a version 1 table's "" in optional strings becomes null. Columns the table does not
    have and that cannot be null (model_id...) stay absent (a partial read); other columns are kept
    after the schema's. Raises ValueError (naming `source`) for a newer version."""
    import pyarrow as pa
    import pyarrow.compute as pc

    version = _check_version(table.schema, source)
    current = schema()
    names = table.column_names
    n = table.num_rows
    arrays, fields = [], []
    done: dict[str, Any] = {}
    for f in current:
        if f.name in names:
            column = table.column(f.name)
            if version < 2 and f.name in OPTIONAL_STRINGS:
                column = pc.if_else(pc.equal(column, ""), pa.scalar(None, pa.string()), column)
            if column.type != f.type:
                column = column.cast(f.type)
        elif f.name == "error_kind" and "error" in done:
            column = pa.array([error_kind_of_message(e) for e in done["error"].to_pylist()], pa.string())
        elif f.nullable:
            column = pa.nulls(n, f.type)
        elif f.name == "enrolled" and "source_path" in names:  # a whole table without it: nobody enrolled
            column = pa.array(np.zeros(n, bool), pa.bool_())
        else:
            continue
        arrays.append(column)
        fields.append(f)
        done[f.name] = column
    for name in names:
        if name not in current.names:
            arrays.append(table.column(name))
            fields.append(table.schema.field(name))
    metadata = {**(table.schema.metadata or {}), **current.metadata}
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields, metadata=metadata))


def parquet_files(path: str | os.PathLike) -> list[Path]:
    """The Parquet files of a face table: the file itself, or a folder's *.parquet files (in any
    subfolder; names starting with "." or "_", such as a part being written, are skipped)."""
    root = Path(path)
    if not root.is_dir():
        return [root]
    return sorted(p for p in root.rglob("*.parquet") if p.is_file()
                  and not any(part.startswith((".", "_")) for part in p.relative_to(root).parts))


def read_table(path: str | os.PathLike, columns: Sequence[str] | None = None) -> pa.Table:
    """A face table file or folder of parts as one pyarrow Table in the current schema: each file's
    schema version is checked (a newer one: ValueError naming the file and both versions) and
    older files are converted (upgrade). columns: read only these (those a file lacks are added
    as nulls where the schema allows)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not Path(path).exists():
        raise FileNotFoundError(f"face table not found: {path}")
    files = parquet_files(path)
    if not files:
        raise ValueError(f"no Parquet files in {path}")
    tables = []
    for file in files:
        try:
            file_schema = pq.read_schema(file)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a file that is not Parquet
            raise ValueError(f"cannot read {file} as Parquet: {exc}") from exc
        _check_version(file_schema, file)
        wanted = None if columns is None else [c for c in columns if c in file_schema.names]
        try:
            table = pq.read_table(file, columns=wanted)
        except Exception as exc:
            raise ValueError(f"cannot read {file} as Parquet: {exc}") from exc
        table = upgrade(table, file)
        if columns is not None:
            table = table.select([c for c in columns if c in table.column_names])
        tables.append(table)
    if len(tables) == 1:
        return tables[0]
    merged = pa.concat_tables(tables, promote_options="default")
    return merged.replace_schema_metadata(tables[0].schema.metadata)


def _fixed(values: np.ndarray, width: int, arrow_type, null: np.ndarray):
    import pyarrow as pa

    flat = pa.array(np.ascontiguousarray(values).reshape(-1), type=arrow_type)
    return pa.FixedSizeListArray.from_arrays(flat, width, mask=pa.array(null) if null.any() else None)


def _strings(values: Sequence[str | None]):
    import pyarrow as pa

    return pa.array([v if v else None for v in values], pa.string())


def _arrow_columns(source_path, sha256, face: np.ndarray, box: np.ndarray, score: np.ndarray,
                   landmarks: np.ndarray, embedding: np.ndarray | None, quality: np.ndarray | None, model_id: str,
                   settings_hash: str, error, error_kind, identity, enrolled: np.ndarray) -> list:
    """The arrays of the schema's columns, in order (nulls where face = -1, for NaN quality, for
    missing strings; embedding None: all null, to be filled)."""
    import pyarrow as pa

    n = len(source_path)
    null = face < 0
    quality = np.full(n, np.nan, np.float32) if quality is None else np.asarray(quality, np.float32)
    return [
        pa.array(source_path, pa.string()), _strings(sha256), pa.array(face, pa.int32()),
        _fixed(box.reshape(n, 4), 4, pa.int64(), null), pa.array(score, pa.float64(), mask=null),
        _fixed(landmarks.reshape(n, 10), 10, pa.int64(), null),
        (pa.nulls(n, pa.list_(pa.float32(), DESCRIPTOR_SIZE)) if embedding is None else
         _fixed(embedding.reshape(n, DESCRIPTOR_SIZE), DESCRIPTOR_SIZE, pa.float32(), null)),
        pa.array(quality, pa.float32(), mask=np.isnan(quality)),
        pa.array([model_id] * n, pa.string()), pa.array([settings_hash] * n, pa.string()),
        _strings(error), _strings(error_kind), _strings(identity), pa.array(enrolled, pa.bool_()),
    ]


def photo_error_kind(photo: Any) -> str | None:
    """The error_kind of a pyfacedlib.photos result: its own `error_kind` when it carries one,
    else classified from its error message (pyfacedlib.errors.error_kind_of_message)."""
    if not photo.error:
        return None
    return getattr(photo, "error_kind", None) or error_kind_of_message(photo.error)


def photo_batch(photos: Iterable, model_id: str, settings_hash: str, identities: Mapping[str, str | None] | None = None,
                chips: bool = False, metadata: dict[bytes, bytes] | None = None) -> pa.RecordBatch:
    """Face-table rows (a pyarrow RecordBatch of `schema()`) from pyfacedlib.photos.PhotoFaces
    results: one row per face, in order, or one face = -1 row for a photo with none (or
    unreadable); a photo's rows are contiguous and its first has face 0 or -1. identities: source
    path -> person. chips: the photos' faces have chips but no descriptors yet (the archive's
    detection stage): embedding is null and a `chip` column holds them. metadata: added to the
    schema's."""
    import pyarrow as pa

    sources: list[str] = []
    shas: list[str | None] = []
    errors: list[str | None] = []
    kinds: list[str | None] = []
    people: list[str | None] = []
    face: list[np.ndarray] = []
    box: list[np.ndarray] = []
    score: list[np.ndarray] = []
    qualities: list[np.ndarray] = []
    landmarks: list[np.ndarray] = []
    vectors: list[np.ndarray] = []
    chip_arrays: list[np.ndarray | None] = []
    detectors: list[str | None] = []
    chip_bytes = 0
    for photo in photos:
        count = len(photo)
        if chips:
            if count and (photo.chips is None or len(photo.chips) != count):
                raise ValueError(f"{photo.source}: faces have no chips")
        elif photo.descriptors.shape[0] != count:
            raise ValueError(f"{photo.source}: faces have no descriptors yet")
        rows = max(count, 1)
        sources += [photo.source] * rows
        shas += [photo.sha256 or None] * rows
        errors += [photo.error or None] * rows
        kinds += [photo_error_kind(photo)] * rows
        people += [(identities or {}).get(photo.source) or None] * rows
        if count:
            face.append(np.arange(count, dtype=np.int32))
            box.append(np.asarray(photo.boxes, np.int64).reshape(count, 4))
            score.append(np.asarray(photo.scores, np.float64).reshape(count))
            quality = np.asarray(photo.quality, np.float32).reshape(-1)
            qualities.append(quality if len(quality) == count else np.full(count, np.nan, np.float32))
            landmarks.append(np.asarray(photo.landmarks, np.int64).reshape(count, 10))
            if chips:
                array = np.ascontiguousarray(photo.chips, np.uint8).reshape(count, -1)
                chip_bytes = array.shape[1]
                chip_arrays.extend(array)
                detectors += [photo.detector or None] * count
            else:
                vectors.append(np.asarray(photo.descriptors, np.float32).reshape(count, DESCRIPTOR_SIZE))
        else:
            face.append(np.full(1, -1, np.int32))
            box.append(np.zeros((1, 4), np.int64))
            score.append(np.full(1, np.nan))
            qualities.append(np.full(1, np.nan, np.float32))
            landmarks.append(np.zeros((1, 10), np.int64))
            if chips:
                chip_arrays.append(None)
                detectors.append(None)
            else:
                vectors.append(np.full((1, DESCRIPTOR_SIZE), np.nan, np.float32))
    n = len(sources)
    cat = lambda parts, shape, dtype: (np.concatenate(parts) if parts else np.zeros((0, *shape), dtype))  # noqa: E731
    faces = cat(face, (), np.int32)
    arrays = _arrow_columns(sources, shas, faces, cat(box, (4,), np.int64), cat(score, (), np.float64),
                            cat(landmarks, (10,), np.int64),
                            None if chips else cat(vectors, (DESCRIPTOR_SIZE,), np.float32),
                            cat(qualities, (), np.float32), model_id, settings_hash, errors, kinds, people,
                            np.zeros(n, bool))
    target = schema(chip_bytes or 150 * 150 * 3) if chips else schema()
    if chips:
        width = chip_bytes or 150 * 150 * 3
        arrays.append(pa.array([None if c is None else c.tobytes() for c in chip_arrays], pa.binary(width)))
        arrays.append(pa.array(detectors, pa.string()))
    if metadata:
        target = target.with_metadata({**target.metadata, **metadata})
    return pa.RecordBatch.from_arrays(arrays, schema=target)


@dataclass
class FaceTable:
    """Face rows in memory (numpy columns); see the module docstring for the columns.

    Rows with face = -1 record photos without a usable face: `error` says why when the file could
    not be read, otherwise no face was found. model_id and settings_hash are the table's own.
    Optional strings (sha256, error, error_kind, identity) hold None when missing ("" given is
    stored as None); quality holds NaN when missing (null in Arrow). An error
    without an error_kind is classified from its message.
    """

    source_path: list[str] = field(default_factory=list)
    sha256: OptionalStrings = field(default_factory=list)
    face: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    box: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.int64))
    embedding: np.ndarray = field(default_factory=lambda: np.zeros((0, DESCRIPTOR_SIZE), np.float32))
    error: OptionalStrings = field(default_factory=list)
    identity: OptionalStrings = field(default_factory=list)
    enrolled: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    model_id: str = ""
    settings_hash: str = ""
    metadata: dict = field(default_factory=dict)
    quality: np.ndarray | None = None          # (n,) float32, NaN: none (default: all NaN)
    error_kind: OptionalStrings | None = None  # default: classified from `error`

    def __post_init__(self) -> None:
        n = len(self.source_path)
        self.source_path = list(self.source_path)
        self.face = np.asarray(self.face, np.int32).reshape(n)
        self.box = np.asarray(self.box, np.int64).reshape(n, 4)
        self.score = np.asarray(self.score, np.float64).reshape(n)
        self.landmarks = np.asarray(self.landmarks, np.int64).reshape(n, 5, 2)
        self.embedding = np.ascontiguousarray(self.embedding, np.float32).reshape(n, DESCRIPTOR_SIZE)
        self.enrolled = np.asarray(self.enrolled, bool).reshape(n)
        self.quality = (np.full(n, np.nan, np.float32) if self.quality is None else
                        np.asarray(self.quality, np.float32).reshape(n))
        if self.error_kind is None:
            self.error_kind = [error_kind_of_message(e) for e in self.error]
        for name in ("sha256", "error", "identity", "error_kind"):
            values = getattr(self, name)
            if len(values) != n:
                raise ValueError(f"face table: {n} rows but {len(values)} values of {name}")
            setattr(self, name, [v if v else None for v in values])

    def __len__(self) -> int:
        return len(self.source_path)

    @property
    def has_face(self) -> np.ndarray:
        """Rows that are faces (not 'no face' / unreadable records)."""
        return self.face >= 0

    @classmethod
    def from_photos(cls, photos: Iterable, model_id: str, settings_hash: str,
                    identities: Mapping[str, str | None] | None = None) -> FaceTable:
        """Rows from pyfacedlib.photos.PhotoFaces results (through photo_batch): one per face, or
        one face = -1 row for a photo with none (or unreadable). identities: source path -> person."""
        import pyarrow as pa

        return cls.from_arrow(pa.Table.from_batches([photo_batch(photos, model_id, settings_hash, identities)]))

    def _fields(self, index: np.ndarray | None = None) -> dict[str, Any]:
        pick = (lambda v: list(v)) if index is None else (lambda v: [v[i] for i in index])  # noqa: E731
        arr = (lambda v: v) if index is None else (lambda v: v[index])  # noqa: E731
        return dict(source_path=pick(self.source_path), sha256=pick(self.sha256), face=arr(self.face),
                    box=arr(self.box), score=arr(self.score), landmarks=arr(self.landmarks),
                    embedding=arr(self.embedding), error=pick(self.error), identity=pick(self.identity),
                    enrolled=arr(self.enrolled), quality=arr(self.quality), error_kind=pick(self.error_kind))

    def take(self, rows: Sequence[int] | np.ndarray) -> FaceTable:
        """The rows at `rows` (indices or a boolean mask), same table-level fields."""
        index = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, np.int64)
        return FaceTable(**self._fields(index), model_id=self.model_id, settings_hash=self.settings_hash,
                         metadata=dict(self.metadata))

    @classmethod
    def concat(cls, tables: Sequence[FaceTable], model_id: str, settings_hash: str,
               metadata: dict | None = None) -> FaceTable:
        """Rows of several tables made with the same model and settings, in order."""
        for t in tables:
            if len(t) and (t.model_id, t.settings_hash) != (model_id, settings_hash):
                raise ValueError("cannot mix face tables made with different models or alignment settings")
        if not tables:
            return cls(model_id=model_id, settings_hash=settings_hash, metadata=dict(metadata or {}))
        parts = [t._fields() for t in tables]
        merged: dict[str, Any] = {name: ([v for p in parts for v in p[name]] if isinstance(parts[0][name], list) else
                         np.concatenate([p[name] for p in parts])) for name in parts[0]}
        return cls(**merged, model_id=model_id, settings_hash=settings_hash, metadata=dict(metadata or {}))

    def to_arrow(self) -> pa.Table:
        """A pyarrow Table with the documented schema (nulls where face = -1 and for missing values),
        the version keys and this table's metadata in its schema metadata."""
        import pyarrow as pa

        meta = {"format": FORMAT_VERSION, **self.metadata}
        target = schema()
        arrays = _arrow_columns(self.source_path, self.sha256, self.face, self.box, self.score, self.landmarks,
                                self.embedding, self.quality, self.model_id, self.settings_hash, self.error,
                                self.error_kind, self.identity, self.enrolled)
        return pa.Table.from_arrays(arrays, schema=target.with_metadata(
            {**target.metadata, METADATA_KEY: json.dumps(meta).encode()}))

    def write_parquet(self, path: str | os.PathLike) -> None:
        """Writes the table to one Parquet file, atomically (a temporary file, then a rename)."""
        import pyarrow.parquet as pq

        with _atomic.atomic_path(path) as tmp:
            pq.write_table(self.to_arrow(), tmp)

    def write_npy(self, path: str | os.PathLike) -> list[Path]:
        """The embeddings of the rows with a face as FILE.npy ((N, 128) float32, in row order) and,
        when any of them has an identity, facenet's labels.npy (int64 class numbers, classes sorted by
        name) and label_strings.npy (the names) beside it; each written atomically. Returns the
        files written."""
        target = Path(path)
        rows = np.flatnonzero(self.has_face)
        written = [target]
        _save_npy(target, self.embedding[rows])
        names = [self.identity[i] or "" for i in rows]
        if any(names):  # identity folders: facenet's labels.npy / label_strings.npy beside it
            classes = sorted(set(names))
            number = {name: i for i, name in enumerate(classes)}
            for name, values in (("labels.npy", np.array([number[n] for n in names], np.int64)),
                                 ("label_strings.npy", np.array(names))):
                _save_npy(target.parent / name, values)
                written.append(target.parent / name)
        return written

    @classmethod
    def from_arrow(cls, table, source: object = "face table") -> FaceTable:
        """A FaceTable from a pyarrow Table with (at least) the documented columns, of this or an
        older schema version (upgrade; a newer one: ValueError naming `source`); a table without
        identity/enrolled columns (an archive) gets no identities."""
        import pyarrow as pa

        table = upgrade(table, source)
        names = set(table.column_names)
        missing = [c for c in ("source_path", "sha256", "face", "box", "landmarks", "embedding") if c not in names]
        if missing:
            raise ValueError(f"not a pyfacedlib face table: columns {missing} missing")
        n = table.num_rows

        def fixed(name: str, width: int, dtype) -> np.ndarray:
            column = table.column(name).combine_chunks()
            if isinstance(column, pa.ChunkedArray):  # pragma: no cover - pyarrow < 15
                column = column.chunk(0) if column.num_chunks else pa.array([], column.type)
            filled = column.fill_null([0] * width) if column.null_count else column
            return np.array(filled.flatten().to_numpy(zero_copy_only=False), dtype).reshape(n, width)

        def strings(name: str) -> list[str | None]:
            return [v or None for v in table.column(name).to_pylist()] if name in names else [None] * n

        def floats(name: str, dtype) -> np.ndarray:
            if name not in names:
                return np.full(n, np.nan, dtype)
            return np.asarray(table.column(name).to_numpy(zero_copy_only=False), dtype)  # nulls -> NaN

        face = np.asarray(table.column("face").to_numpy(), np.int32)
        embedding = fixed("embedding", DESCRIPTOR_SIZE, np.float32)
        embedding[face < 0] = np.nan
        model_ids = {m for m in strings("model_id") if m}
        hashes = {h for h in strings("settings_hash") if h}
        if len(model_ids) > 1 or len(hashes) > 1:
            raise ValueError(f"face table mixes {len(model_ids)} models / {len(hashes)} alignment settings; "
                             "split it by model_id and settings_hash first")
        enrolled = (np.asarray(table.column("enrolled").fill_null(False).to_numpy(zero_copy_only=False), bool)
                    if "enrolled" in names else np.zeros(n, bool))
        raw_meta = (table.schema.metadata or {}).get(METADATA_KEY)
        return cls(table.column("source_path").to_pylist(), strings("sha256"), face, fixed("box", 4, np.int64),
                   floats("score", np.float64), fixed("landmarks", 10, np.int64).reshape(n, 5, 2), embedding,
                   strings("error"), strings("identity"), enrolled, next(iter(model_ids), ""),
                   next(iter(hashes), ""), json.loads(raw_meta) if raw_meta else {},
                   quality=floats("quality", np.float32), error_kind=strings("error_kind"))

    @classmethod
    def read_parquet(cls, path: str | os.PathLike) -> FaceTable:
        """Reads a face table from a Parquet file or a folder of Parquet parts (read_table: each
        file's schema version checked, older files converted)."""
        return cls.from_arrow(read_table(path), path)


def _save_npy(path: Path, values: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, values)
    _atomic.write_bytes(path, buffer.getvalue())


@dataclass
class TableChanges:
    """What update_table changed, by source path."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)     # same path, other bytes
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    reused: int = 0          # added or changed files whose bytes were already embedded (moved/copied): no work
    unreadable: dict[str, str] = field(default_factory=dict)  # files of this run that could not be read: why

    def summary(self) -> str:
        """One line."""
        line = (f"{len(self.added)} added ({self.reused} reused), {len(self.changed)} changed, "
                f"{len(self.removed)} removed, {self.unchanged} unchanged")
        return line + (f", {len(self.unreadable)} unreadable" if self.unreadable else "")


def _hash(path: str) -> tuple[str | None, OSError | None]:
    """(sha256, None), or (None, the error) for a file that cannot be read (permission denied, gone
    since it was listed, an I/O error): one such file must not stop a batch."""
    from ._system import file_sha256

    try:
        return file_sha256(path), None
    except OSError as exc:
        return None, exc


def update_table(previous: FaceTable, files: Mapping[str, str | None], embedder: FaceEmbedder,
                 settings: AlignmentSettings, workers: int | None = None,
                 progress: bool | str = False) -> tuple[FaceTable, TableChanges]:
    """The face table of `files` (path -> identity, "" or None when none), in that order, re-using the rows
    of `previous` (made with the same model and settings) for files whose sha256 it already holds:
    only new or changed bytes are detected and embedded; files no longer listed are dropped. A file
    that cannot be read gets an error row (error, error_kind) and the rest go on; rows of a
    transient error (out of memory, an I/O error) are tried again."""
    from concurrent.futures import ThreadPoolExecutor

    from ._system import available_cpus
    from .errors import error_kind
    from .photos import PhotoFaces, embed_photos

    model_id, settings_hash = previous.model_id, previous.settings_hash
    kinds = previous.error_kind or [None] * len(previous)  # a list after __post_init__
    if settings.key() != settings_hash:
        raise ValueError("the previous table was made with other alignment settings")
    with ThreadPoolExecutor(workers or available_cpus()) as pool:
        hashed = dict(zip(files, pool.map(_hash, files), strict=True))
    hashes = {source: sha for source, (sha, _) in hashed.items()}
    old_sha = dict(zip(previous.source_path, previous.sha256, strict=True))
    rows_of: dict[tuple[str, str | None], list[int]] = {}
    first_source: dict[str | None, str] = {}
    for row, (source, sha) in enumerate(zip(previous.source_path, previous.sha256, strict=True)):
        rows_of.setdefault((source, sha), []).append(row)
        if sha and kinds[row] != "transient":
            first_source.setdefault(sha, source)
    changes = TableChanges()
    keep = np.zeros(len(previous), bool)
    reused: list[FaceTable] = []
    todo: list[str] = []
    failed: list[PhotoFaces] = []
    for source, identity in files.items():
        sha, problem = hashed[source]
        if problem is not None:
            (changes.changed if source in old_sha else changes.added).append(source)
            failed.append(PhotoFaces(source, error=str(problem) or type(problem).__name__,
                                     error_kind=error_kind(problem)))
            continue
        rows = rows_of.get((source, sha))
        if rows and all((previous.identity[i] or None) == (identity or None) for i in rows) \
                and not any(kinds[i] == "transient" for i in rows):
            keep[rows] = True
            changes.unchanged += 1
            continue
        (changes.changed if source in old_sha and old_sha[source] != sha else changes.added).append(source)
        if sha in first_source:  # these bytes were embedded already (under this or another name)
            part = previous.take(rows_of[(first_source[sha], sha)])
            part.source_path = [source] * len(part)
            part.identity = [identity or None] * len(part)
            reused.append(part)
            changes.reused += 1
        else:
            todo.append(source)
    changes.removed = sorted(set(old_sha) - set(files))
    photos = list(embed_photos(todo, embedder, settings, workers=workers, hash_files=False,
                               progress=progress)) if todo else []
    for photo in photos:
        photo.sha256 = hashes[photo.source] or ""
    photos += failed
    changes.unreadable = {photo.source: photo.error for photo in photos if photo.error}
    new = FaceTable.from_photos(photos, model_id, settings_hash, files)
    merged = FaceTable.concat([previous.take(keep), *reused, new], model_id, settings_hash, previous.metadata)
    order = {source: i for i, source in enumerate(files)}
    return merged.take(np.argsort([order[s] for s in merged.source_path], kind="stable")), changes


def embed_files(files: dict[str, str | None], embedder: FaceEmbedder, settings: AlignmentSettings,
                previous: str | os.PathLike | None = None, workers: int | None = None,
                progress: bool | str = False, warn: Callable[[str], None] | None = None
                ) -> tuple[FaceTable, TableChanges]:
    """The face table of `files` (path -> person, or None), re-using the rows of the Parquet table at
    `previous` when it exists and was made with the same model and alignment settings (only new or
    changed files are detected and embedded; see update_table). A previous table that cannot be
    read or was made otherwise is not re-used, and `warn` is told why."""
    from ._system import file_sha256

    model_id = file_sha256(embedder.model_path)
    base = FaceTable(model_id=model_id, settings_hash=settings.key(), metadata={"settings": asdict(settings)})
    if previous is not None and Path(previous).exists():
        try:
            old = FaceTable.read_parquet(previous)
        except ValueError as exc:
            if warn:
                warn(f"not re-using {previous}: {exc}")
        else:
            if (old.model_id, old.settings_hash) == (model_id, settings.key()) or not len(old):
                old.model_id, old.settings_hash = model_id, settings.key()
                base = old
            elif warn:
                warn(f"not re-using {previous}: made with another model or other alignment settings")
    base.metadata.update({"settings": asdict(settings), "model_path": embedder.model_path})
    return update_table(base, files, embedder, settings, workers=workers, progress=progress)
