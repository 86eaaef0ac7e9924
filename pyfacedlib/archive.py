"""Photo archives into face tables, on this machine or on a Ray cluster, resumable.

One pipeline, written once (pyfacedlib.photos): file -> sha256 -> decode (EXIF applied) -> detect (a
scaled copy for large photos) -> landmarks -> chips -> descriptors. The output is a folder of
Parquet parts (OUT.parquet/part-*.parquet, the pyfacedlib.facetable schema) that
`pyarrow.parquet.read_table(OUT)` and `pyfacedlib.Gallery.load(OUT)` read as one table.

Both engines turn results into rows with one function (pyfacedlib.facetable.photo_batch) and hand
the driver face-table Arrow batches, which it only writes as parts (_PartWriter):
- "local": detection on threads over this machine's cores (the C++ core releases the GIL: threads
  scale like processes here, without copying images between processes), descriptors in batches on
  all cores. Nothing extra to install.
- "ray": Ray Data (pip install "pyfacedlib[ray]"; the code is pyfacedlib.archive_ray): paths ->
  detection actors -> embedding actors -> the driver. Callable classes, so models load once per
  actor; detection and embedding are separate stages ("split"), so GPU embedding actors can be fed by
  CPU detection actors, or one ("fused").

Faults: a part is written to a hidden temporary file and renamed, so a killed run (even SIGKILL)
leaves whole parts only, and a photo's rows are never split across parts; rerunning with
resume=True skips every file whose sha256 is already in the output and processes the rest (a copy
of a file already in the output counts as done); a file whose row is a transient error (out of
memory, an I/O error) is tried again and that row replaced. Hidden temporaries of killed runs are
removed, those of a run still writing (its PID is in their names) never. An unreadable file is a row with `error` and
`error_kind` set, never a failed run; Ray retries failed tasks and restarts lost actors itself.
Parts of an older schema version are converted in place (each atomically) when a run resumes.
"""
from __future__ import annotations

import json
import os
import secrets
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ._archive_base import BATCH_KEY, ENGINES, STAGES, ArchiveConfig, ArchiveReport, detect_file, photo_starts

__all__ = ["BATCH_KEY", "ENGINES", "PART_GLOB", "STAGES", "ArchiveConfig", "ArchiveReport", "embed_archive"]
from ._system import available_cpus, file_sha256
from .align import AlignmentSettings
from .datasets.identities import list_files
from .facetable import METADATA_KEY, SCHEMA_VERSION, photo_batch, read_table, schema_version
from .photos import PhotoFaces, ordered_map, progress_bar, with_descriptors

PART_GLOB = "part-*.parquet"
def _existing(out: Path, model_id: str, settings: AlignmentSettings) -> set[str]:
    """sha256 of every file already done in the output's parts (checked to be this model and
    settings); rows of a transient error (out of memory, an I/O error) do not count as done, so
    their files are tried again. Temporaries of killed runs are removed (never those of a run still
    writing), parts of an older schema version are converted in place (each atomically), a part of
    a newer version is refused (ValueError)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from . import _atomic

    _atomic.remove_stale_temporaries(out / PART_GLOB, name_pattern=PART_GLOB)
    parts = sorted(out.glob(PART_GLOB))
    if not parts:
        return set()
    table = read_table(out, columns=["sha256", "model_id", "settings_hash"])  # checks every part's version
    models = set(table.column("model_id").to_pylist())
    hashes = set(table.column("settings_hash").to_pylist())
    if models - {model_id} or hashes - {settings.key()}:
        raise ValueError(f"{out} was made with another model or other alignment settings: write to a new output")
    for part in parts:
        if schema_version(pq.read_schema(part)) < SCHEMA_VERSION:
            upgraded = read_table(part)
            with _atomic.atomic_path(part) as tmp:
                pq.write_table(upgraded, tmp)
    _drop_retried(out)
    table = read_table(out, columns=["sha256", "error_kind"])
    final = pc.invert(pc.fill_null(pc.equal(table.column("error_kind"), "transient"), False))
    return set(table.column("sha256").filter(final).to_pylist()) - {None}


def _drop_retried(out: Path) -> int:
    """Removes the rows of a transient error whose file was tried again: it has rows without an error
    now, or a later transient error row (parts sort by the time their run started). Each part is
    rewritten atomically. Returns the rows removed."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from . import _atomic

    parts = sorted(out.glob(PART_GLOB))
    done: set[str] = set()
    last_try: dict[str, Path] = {}
    transient_rows = {}
    for part in parts:
        rows = read_table(part, columns=["source_path", "error_kind"])
        transient = pc.fill_null(pc.equal(rows.column("error_kind"), "transient"), False)
        done.update(rows.column("source_path").filter(pc.invert(transient)).to_pylist())
        if pc.any(transient).as_py():
            transient_rows[part] = (rows.column("source_path"), transient)
            last_try.update(dict.fromkeys(rows.column("source_path").filter(transient).to_pylist(), part))
    removed = 0
    for part, (sources, transient) in transient_rows.items():
        superseded = done | {source for source, latest in last_try.items() if latest != part}
        drop = pc.and_(transient, pc.is_in(sources, value_set=_string_array(superseded)))
        count = pc.sum(drop).as_py() or 0
        if not count:
            continue
        kept = read_table(part).filter(pc.invert(drop))
        if kept.num_rows:
            with _atomic.atomic_path(part) as tmp:
                pq.write_table(kept, tmp)
        else:
            part.unlink()
        removed += count
    return removed


def _string_array(values: set[str]):
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())


class _PartWriter:
    """Takes face-table Arrow batches of whole photos and writes them as Parquet parts, atomically,
    `per_part` photos a part (a photo's rows always in one part); counts into the report."""

    def __init__(self, out: Path, settings: AlignmentSettings, model_path: str, per_part: int,
                 report: ArchiveReport) -> None:
        self.out, self.per_part, self.report = out, per_part, report
        self.metadata = {METADATA_KEY: json.dumps({"format": SCHEMA_VERSION, "kind": "archive",
                                                   "settings": asdict(settings), "model_path": model_path}).encode()}
        # unique per run: two runs of one process within a second must not overwrite each other's parts
        self.run = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}-{secrets.token_hex(4)}"
        self.pending: list = []
        self.pending_photos = 0
        self.seen: set[str] = set()

    def add(self, batch) -> int:
        """Counts and queues a batch; writes the parts it fills. Returns the photos it held."""
        import pyarrow as pa

        table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        meta = {k: v for k, v in (table.schema.metadata or {}).items() if k != BATCH_KEY}
        batch = table.replace_schema_metadata({**meta, **self.metadata})
        starts = photo_starts(batch)
        self._count(batch, starts)
        bounds = [*starts.tolist(), batch.num_rows]
        first = 0  # photo number where the batch's not yet queued rows begin
        while first < len(starts):
            take = min(self.per_part - self.pending_photos, len(starts) - first)
            self.pending.append(batch.slice(bounds[first], bounds[first + take] - bounds[first]))
            self.pending_photos += take
            first += take
            if self.pending_photos >= self.per_part:
                self.flush()
        return len(starts)

    def _count(self, batch, starts: np.ndarray) -> None:
        report = self.report
        faces = np.asarray(batch.column("face").to_numpy(zero_copy_only=False))
        sources = batch.column("source_path").to_pylist()
        shas = batch.column("sha256").to_pylist()
        errors = batch.column("error").to_pylist()
        report.processed += len(starts)
        report.faces += int((faces >= 0).sum())
        for row in starts.tolist():
            sha = shas[row]
            if sha and sha in self.seen:  # identical bytes under another name: kept, counted
                report.duplicates += 1
            self.seen.add(sha)
            if errors[row]:
                report.unreadable[sources[row]] = errors[row]
            elif faces[row] < 0:
                report.without_face += 1

    def flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from . import _atomic

        if not self.pending:
            return
        table = pa.concat_tables(self.pending)
        with _atomic.atomic_path(self.out / f"part-{self.run}-{self.report.parts_written:06d}.parquet") as tmp:
            pq.write_table(table, tmp)
        self.report.parts_written += 1
        self.pending, self.pending_photos = [], 0


def embed_archive(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, model: str | os.PathLike | None = None,
                  settings: AlignmentSettings | None = None, config: ArchiveConfig | None = None,
                  progress: bool = True) -> ArchiveReport:
    """Every face of every image under `inputs` into the Parquet folder `out` (see the module doc).

    settings: detection/alignment (default: AlignmentSettings.for_photos(): photos without a
    face get a face = -1 row). Raises FileExistsError when `out` exists and config.resume is False, FileNotFoundError
    for a missing input, ValueError when the inputs hold no image.
    """
    from . import models

    config = config or ArchiveConfig()
    settings = settings or AlignmentSettings.for_photos()
    if settings.fallback.endswith("center"):
        raise ValueError("an archive never guesses a centred face: fallback must be 'cnn' or 'none'")
    model_path = str(model) if model is not None else models.path(models.FACE_RECOGNITION)
    model_id = file_sha256(model_path)
    files = list_files(inputs)  # FileNotFoundError for a missing input, before anything is written
    if not files:
        raise ValueError(f"no images under {', '.join(map(str, inputs))}")
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder of parts")
    if target.exists() and any(target.iterdir()) and not config.resume:
        raise FileExistsError(f"{target} exists: resume it (--resume) or choose a new output")
    target.mkdir(parents=True, exist_ok=True)
    done = _existing(target, model_id, settings)
    report = ArchiveReport(str(target), config.engine, images=len(files))
    writer = _PartWriter(target, settings, model_path, config.images_per_part, report)
    started = time.perf_counter()
    with progress_bar(progress, "archive", "img", len(files)) as bar:
        if config.engine == "local":
            batches = _run_local(files, model_path, model_id, settings, config, done, report)
        else:
            from .archive_ray import run_ray

            batches = run_ray(files, model_path, model_id, settings, config, done, report)
        for batch, skipped in batches:
            report.already_done += skipped
            bar.update(writer.add(batch) + skipped)
    writer.flush()
    if config.resume:
        _drop_retried(target)  # the error rows of files tried again, now done
    # Ray drops empty batches (every file of a task already done): whatever was not processed was done
    report.already_done = report.images - report.processed
    report.seconds = time.perf_counter() - started
    return report


def _run_local(files: list[str], model_path: str, model_id: str, settings: AlignmentSettings,
               config: ArchiveConfig, done: set[str], report: ArchiveReport) -> Iterator[tuple[Any, int]]:
    """(face-table batch, files skipped as done) for the files, on this machine's threads."""
    from .embedder import FaceEmbedder

    report.workers = config.workers or available_cpus()
    detected = ordered_map(files, lambda path: detect_file(path, settings, done), report.workers)
    per_batch = min(config.images_per_part, 64)
    photos: list[PhotoFaces] = []
    skipped = 0
    for photo in with_descriptors(detected, FaceEmbedder(model_path, **config.embedder_options())):
        if photo is None:
            skipped += 1
        else:
            photos.append(photo)
        if len(photos) >= per_batch or (skipped and not photos):
            yield photo_batch(photos, model_id, settings.key()), skipped
            photos, skipped = [], 0
    if photos or skipped:
        yield photo_batch(photos, model_id, settings.key()), skipped


_MOVED_TO_RAY = ("RayDetector", "RayEmbedder", "RayDetectAndEmbed", "start_local_ray")


def __getattr__(name: str) -> Any:
    """The Ray stages moved to pyfacedlib.archive_ray; their old names here still work."""
    if name in _MOVED_TO_RAY:
        warnings.warn(f"pyfacedlib.archive.{name} moved to pyfacedlib.archive_ray.{name}", DeprecationWarning,
                      stacklevel=2)
        from . import archive_ray

        return getattr(archive_ray, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
