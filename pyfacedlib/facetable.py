"""Tables of faces: one row per face found in a photo (or per photo without a face, or unreadable),
with its descriptor and how it was made, stored as Parquet.

Galleries, exports and the archive pipeline all read and write this one schema:

=============  ==========================  ==================================================
column         type                        meaning
=============  ==========================  ==================================================
source_path    string                      the photo (or video) file
sha256         string                      sha256 of the file's bytes ("" for in-memory images)
face           int32                       face number in the photo; -1: no face (or unreadable)
box            fixed_size_list<int64>[4]   left, top, right, bottom (null when face = -1)
score          float64                     detector score (null when face = -1)
landmarks      fixed_size_list<int64>[10]  5 points x, y (null when face = -1)
embedding      fixed_size_list<float>[128] the 128-D descriptor, float32 (null when face = -1)
model_id       string                      sha256 of the face model file that made the embedding
settings_hash  string                      AlignmentSettings.key() of the detection/alignment
error          string                      why the file could not be read ("" when it was)
identity       string                      the person ("" when not known)
enrolled       bool                        a gallery uses this face for its identity
=============  ==========================  ==================================================

Table-level metadata (key b"pyfacedlib") holds JSON with the alignment settings and, for a
gallery, its threshold and enrolment rule.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from . import _atomic

if TYPE_CHECKING:
    from .chipcache import AlignmentSettings
    from .embedder import FaceEmbedder

DESCRIPTOR_SIZE = 128
METADATA_KEY = b"pyfacedlib"
FORMAT_VERSION = 1


def schema():
    """The pyarrow schema of a face table."""
    import pyarrow as pa

    return pa.schema([
        ("source_path", pa.string()), ("sha256", pa.string()), ("face", pa.int32()),
        ("box", pa.list_(pa.int64(), 4)), ("score", pa.float64()), ("landmarks", pa.list_(pa.int64(), 10)),
        ("embedding", pa.list_(pa.float32(), DESCRIPTOR_SIZE)), ("model_id", pa.string()),
        ("settings_hash", pa.string()), ("error", pa.string()), ("identity", pa.string()), ("enrolled", pa.bool_()),
    ])


@dataclass
class FaceTable:
    """Face rows in memory (numpy columns); see the module docstring for the columns.

    Rows with face = -1 record photos without a usable face: `error` says why when the file could
    not be read, otherwise no face was found. model_id and settings_hash are the table's own.
    """

    source_path: list[str] = field(default_factory=list)
    sha256: list[str] = field(default_factory=list)
    face: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    box: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.int64))
    embedding: np.ndarray = field(default_factory=lambda: np.zeros((0, DESCRIPTOR_SIZE), np.float32))
    error: list[str] = field(default_factory=list)
    identity: list[str] = field(default_factory=list)
    enrolled: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    model_id: str = ""
    settings_hash: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.source_path)
        self.face = np.asarray(self.face, np.int32).reshape(n)
        self.box = np.asarray(self.box, np.int64).reshape(n, 4)
        self.score = np.asarray(self.score, np.float64).reshape(n)
        self.landmarks = np.asarray(self.landmarks, np.int64).reshape(n, 5, 2)
        self.embedding = np.ascontiguousarray(self.embedding, np.float32).reshape(n, DESCRIPTOR_SIZE)
        self.enrolled = np.asarray(self.enrolled, bool).reshape(n)
        for name in ("sha256", "error", "identity"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"face table: {n} rows but {len(getattr(self, name))} values of {name}")

    def __len__(self) -> int:
        return len(self.source_path)

    @property
    def has_face(self) -> np.ndarray:
        """Rows that are faces (not 'no face' / unreadable records)."""
        return self.face >= 0

    @classmethod
    def from_photos(cls, photos: Iterable, model_id: str, settings_hash: str,
                    identities: dict[str, str] | None = None) -> "FaceTable":
        """Rows from pyfacedlib.photos.PhotoFaces results: one per face, or one face = -1 row for a
        photo with none (or unreadable). identities: source path -> person."""
        columns: dict[str, list] = {k: [] for k in ("source_path", "sha256", "face", "box", "score", "landmarks",
                                                     "embedding", "error", "identity")}
        for photo in photos:
            person = (identities or {}).get(photo.source, "")
            count = len(photo)
            if photo.descriptors.shape[0] != count:
                raise ValueError(f"{photo.source}: faces have no descriptors yet")
            rows = max(count, 1)
            columns["source_path"] += [photo.source] * rows
            columns["sha256"] += [photo.sha256] * rows
            columns["error"] += [photo.error] * rows
            columns["identity"] += [person] * rows
            if count:
                columns["face"].append(np.arange(count))
                columns["box"].append(photo.boxes)
                columns["score"].append(photo.scores)
                columns["landmarks"].append(photo.landmarks)
                columns["embedding"].append(photo.descriptors)
            else:
                columns["face"].append([-1])
                columns["box"].append(np.zeros((1, 4), np.int64))
                columns["score"].append([np.nan])
                columns["landmarks"].append(np.zeros((1, 5, 2), np.int64))
                columns["embedding"].append(np.full((1, DESCRIPTOR_SIZE), np.nan, np.float32))
        n = len(columns["source_path"])

        def stacked(name: str, shape: tuple[int, ...], dtype) -> np.ndarray:
            parts = columns[name]
            return np.concatenate([np.asarray(p, dtype).reshape(-1, *shape) for p in parts]) if parts else \
                np.zeros((0, *shape), dtype)

        return cls(columns["source_path"], columns["sha256"], stacked("face", (), np.int32).reshape(n),
                   stacked("box", (4,), np.int64), stacked("score", (), np.float64).reshape(n),
                   stacked("landmarks", (5, 2), np.int64), stacked("embedding", (DESCRIPTOR_SIZE,), np.float32),
                   columns["error"], columns["identity"], np.zeros(n, bool), model_id, settings_hash)

    def take(self, rows: Sequence[int] | np.ndarray) -> "FaceTable":
        """The rows at `rows` (indices or a boolean mask), same table-level fields."""
        index = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, np.int64)
        pick = lambda values: [values[i] for i in index]  # noqa: E731
        return FaceTable(pick(self.source_path), pick(self.sha256), self.face[index], self.box[index],
                         self.score[index], self.landmarks[index], self.embedding[index], pick(self.error),
                         pick(self.identity), self.enrolled[index], self.model_id, self.settings_hash,
                         dict(self.metadata))

    @classmethod
    def concat(cls, tables: Sequence["FaceTable"], model_id: str, settings_hash: str,
               metadata: dict | None = None) -> "FaceTable":
        """Rows of several tables made with the same model and settings, in order."""
        for t in tables:
            if len(t) and (t.model_id, t.settings_hash) != (model_id, settings_hash):
                raise ValueError("cannot mix face tables made with different models or alignment settings")
        join = lambda name: [v for t in tables for v in getattr(t, name)]  # noqa: E731
        stack = lambda name, empty: (np.concatenate([getattr(t, name) for t in tables])  # noqa: E731
                                     if tables else empty)
        base = cls()
        return cls(join("source_path"), join("sha256"), stack("face", base.face), stack("box", base.box),
                   stack("score", base.score), stack("landmarks", base.landmarks),
                   stack("embedding", base.embedding), join("error"), join("identity"),
                   stack("enrolled", base.enrolled), model_id, settings_hash, dict(metadata or {}))

    def to_arrow(self):
        """A pyarrow Table with the documented schema (nulls where face = -1)."""
        import pyarrow as pa

        n = len(self)
        valid = self.has_face
        mask = ~valid

        def fixed(values: np.ndarray, width: int, arrow_type):
            flat = pa.array(values.reshape(n * width), type=arrow_type)
            return pa.FixedSizeListArray.from_arrays(flat, width, mask=pa.array(mask) if mask.any() else None)

        meta = {"format": FORMAT_VERSION, **self.metadata}
        return pa.Table.from_arrays([
            pa.array(self.source_path, pa.string()), pa.array(self.sha256, pa.string()),
            pa.array(self.face, pa.int32()), fixed(self.box, 4, pa.int64()),
            pa.array(self.score, pa.float64(), mask=mask), fixed(self.landmarks, 10, pa.int64()),
            fixed(self.embedding, DESCRIPTOR_SIZE, pa.float32()),
            pa.array([self.model_id] * n, pa.string()), pa.array([self.settings_hash] * n, pa.string()),
            pa.array(self.error, pa.string()), pa.array(self.identity, pa.string()),
            pa.array(self.enrolled, pa.bool_()),
        ], schema=schema().with_metadata({METADATA_KEY: json.dumps(meta).encode()}))

    def write_parquet(self, path: str | os.PathLike) -> None:
        """Writes the table to one Parquet file, atomically (a temporary file, then a rename)."""
        import pyarrow.parquet as pq

        with _atomic.atomic_path(path) as tmp:
            pq.write_table(self.to_arrow(), tmp)

    @classmethod
    def from_arrow(cls, table) -> "FaceTable":
        """A FaceTable from a pyarrow Table with (at least) the documented columns; a table without
        identity/enrolled columns (an archive) gets empty identities."""
        import pyarrow as pa

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

        def strings(name: str) -> list[str]:
            return [v or "" for v in table.column(name).to_pylist()] if name in names else [""] * n

        face = np.asarray(table.column("face").to_numpy(), np.int32)
        embedding = fixed("embedding", DESCRIPTOR_SIZE, np.float32)
        embedding[face < 0] = np.nan
        model_ids = set(strings("model_id")) - {""}
        hashes = set(strings("settings_hash")) - {""}
        if len(model_ids) > 1 or len(hashes) > 1:
            raise ValueError(f"face table mixes {len(model_ids)} models / {len(hashes)} alignment settings; "
                             "split it by model_id and settings_hash first")
        score = table.column("score").to_numpy(zero_copy_only=False) if "score" in names else np.full(n, np.nan)
        enrolled = (np.asarray(table.column("enrolled").fill_null(False).to_numpy(zero_copy_only=False), bool)
                    if "enrolled" in names else np.zeros(n, bool))
        raw_meta = (table.schema.metadata or {}).get(METADATA_KEY)
        return cls(strings("source_path"), strings("sha256"), face, fixed("box", 4, np.int64),
                   np.asarray(score, np.float64), fixed("landmarks", 10, np.int64).reshape(n, 5, 2), embedding,
                   strings("error"), strings("identity"), enrolled, next(iter(model_ids), ""),
                   next(iter(hashes), ""), json.loads(raw_meta) if raw_meta else {})

    @classmethod
    def read_parquet(cls, path: str | os.PathLike) -> "FaceTable":
        """Reads a face table from a Parquet file or a folder of Parquet parts."""
        import pyarrow.parquet as pq

        if not Path(path).exists():
            raise FileNotFoundError(f"face table not found: {path}")
        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid/OSError for a file that is not Parquet
            raise ValueError(f"cannot read {path} as Parquet: {exc}") from exc
        return cls.from_arrow(table)


@dataclass
class TableChanges:
    """What update_table changed, by source path."""

    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)     # same path, other bytes
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    reused: int = 0          # added or changed files whose bytes were already embedded (moved/copied): no work

    def summary(self) -> str:
        """One line."""
        return (f"{len(self.added)} added ({self.reused} reused), {len(self.changed)} changed, "
                f"{len(self.removed)} removed, {self.unchanged} unchanged")


def update_table(previous: FaceTable, files: dict[str, str], embedder: "FaceEmbedder", settings: "AlignmentSettings",
                 workers: int | None = None, progress: bool | str = False) -> tuple[FaceTable, TableChanges]:
    """The face table of `files` (path -> identity, "" when none), in that order, re-using the rows
    of `previous` (made with the same model and settings) for files whose sha256 it already holds:
    only new or changed bytes are detected and embedded; files no longer listed are dropped."""
    from concurrent.futures import ThreadPoolExecutor

    from ._system import available_cpus, file_sha256
    from .photos import embed_photos

    model_id, settings_hash = previous.model_id, previous.settings_hash
    if settings.key() != settings_hash:
        raise ValueError("the previous table was made with other alignment settings")
    with ThreadPoolExecutor(workers or available_cpus()) as pool:
        hashes = dict(zip(files, pool.map(file_sha256, files)))
    old_sha = dict(zip(previous.source_path, previous.sha256))
    rows_of: dict[tuple[str, str], list[int]] = {}
    first_source: dict[str, str] = {}
    for row, (source, sha) in enumerate(zip(previous.source_path, previous.sha256)):
        rows_of.setdefault((source, sha), []).append(row)
        first_source.setdefault(sha, source)
    changes = TableChanges()
    keep = np.zeros(len(previous), bool)
    reused: list[FaceTable] = []
    todo: list[str] = []
    for source, identity in files.items():
        sha = hashes[source]
        rows = rows_of.get((source, sha))
        if rows and all(previous.identity[i] == identity for i in rows):
            keep[rows] = True
            changes.unchanged += 1
            continue
        (changes.changed if source in old_sha and old_sha[source] != sha else changes.added).append(source)
        if sha in first_source:  # these bytes were embedded already (under this or another name)
            part = previous.take(rows_of[(first_source[sha], sha)])
            part.source_path = [source] * len(part)
            part.identity = [identity] * len(part)
            reused.append(part)
            changes.reused += 1
        else:
            todo.append(source)
    changes.removed = sorted(set(old_sha) - set(files))
    photos = list(embed_photos(todo, embedder, settings, workers=workers, hash_files=False,
                               progress=progress)) if todo else []
    for photo in photos:
        photo.sha256 = hashes[photo.source]
    new = FaceTable.from_photos(photos, model_id, settings_hash, files)
    merged = FaceTable.concat([previous.take(keep), *reused, new], model_id, settings_hash, previous.metadata)
    order = {source: i for i, source in enumerate(files)}
    return merged.take(np.argsort([order[s] for s in merged.source_path], kind="stable")), changes
