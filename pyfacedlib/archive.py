"""Photo archives into face tables, on this machine or on a Ray cluster, resumable.

One pipeline, written once (pyfacedlib.photos): file -> sha256 -> decode (EXIF applied) -> detect (a
scaled copy for large photos) -> landmarks -> chips -> descriptors. The output is a folder of
Parquet parts (OUT.parquet/part-*.parquet, the pyfacedlib.facetable schema) that
`pyarrow.parquet.read_table(OUT)` and `pyfacedlib.Gallery.load(OUT)` read as one table.

Engines:
- "local": detection on threads over this machine's cores (the C++ core releases the GIL: threads
  scale like processes here, without copying images between processes), descriptors in batches on
  all cores. Nothing extra to install.
- "ray": Ray Data (pip install "pyfacedlib[ray]"): paths -> detection actors -> embedding actors ->
  the driver, which writes the parts. Callable classes, so models load once per actor; detection
  and embedding are separate stages, so GPU embedding actors can be fed by CPU detection actors.

Faults: a part is written to a hidden temporary file and renamed, so a killed run (even SIGKILL)
leaves whole parts only; rerunning with resume=True skips every file whose sha256 is already in
the output and processes the rest (a copy of a file already in the output counts as done). An unreadable file is a row
with `error` set, never a failed run; Ray retries failed tasks and restarts lost actors itself.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from ._system import available_cpus, file_sha256
from .chipcache import AlignmentSettings
from .datasets.identities import list_files
from .facetable import DESCRIPTOR_SIZE, FaceTable
from .photos import PhotoFaces, detect_photo, ordered_map, progress_bar, with_descriptors

ENGINES = ("local", "ray")
PART_GLOB = "part-*.parquet"


@dataclass(frozen=True)
class ArchiveConfig:
    """How an archive is processed.

    engine: "local" or "ray". workers: detection threads (local) or detection actors (ray); None =
    the CPUs of this machine (local) or of the Ray cluster less the embedding actors' (ray).
    address: Ray cluster to join ("auto": the running one, "ray://host:10001"...); None starts a
    Ray instance on this machine with workers + embed_actors CPUs. embed_actors / embed_cpus /
    embed_gpus: the embedding stage (ray). images_per_part: photos per Parquet part (what a kill can
    lose at most, besides the photos in flight). resume: continue an existing output. stages: see
    split_stages.
    """

    engine: str = "local"
    workers: int | None = None
    address: str | None = None
    embed_actors: int = 1
    embed_cpus: float = 1.0
    embed_gpus: float = 0.0
    images_per_part: int = 1000
    images_per_task: int = 32
    resume: bool = False
    stages: str = "auto"

    @property
    def split_stages(self) -> bool:
        """Ray: detection and embedding in separate actor pools ("split"; what GPU embedding needs) or
        in the same actors ("fused": no chips cross processes); "auto" splits when embed_gpus > 0."""
        return self.stages == "split" or (self.stages == "auto" and self.embed_gpus > 0)

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers!r}")
        if self.embed_actors < 1 or self.embed_cpus <= 0 or self.embed_gpus < 0:
            raise ValueError("embed_actors must be >= 1, embed_cpus > 0, embed_gpus >= 0")
        if self.stages not in ("auto", "split", "fused"):
            raise ValueError(f"stages must be 'auto', 'split' or 'fused', got {self.stages!r}")
        if self.images_per_part < 1 or self.images_per_task < 1:
            raise ValueError("images_per_part and images_per_task must be >= 1")


@dataclass
class ArchiveReport:
    """What a run did."""

    out: str
    engine: str
    images: int = 0                      # files found
    already_done: int = 0                # skipped: their sha256 is in the output already
    processed: int = 0                   # photos embedded in this run
    duplicates: int = 0                  # processed files with the same bytes as another file of this run
    faces: int = 0
    without_face: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)
    parts_written: int = 0
    seconds: float = 0.0
    workers: int = 0
    # ray: distinct actor instances per stage (each loads its models once) and detection batches they served
    actors: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        """One line."""
        rate = self.processed / self.seconds if self.seconds else 0.0
        return (f"{self.images} images: {self.already_done} already in {self.out}, {self.processed} processed "
                f"({rate:.1f} images/s, {self.engine}, {self.workers} workers), {self.faces} faces, "
                f"{self.without_face} without a face, {len(self.unreadable)} unreadable; "
                f"{self.parts_written} parts written")


def _existing(out: Path, model_id: str, settings: AlignmentSettings) -> set[str]:
    """sha256 of every file already in the output's parts (checked to be this model and settings);
    leftovers of a killed run (hidden temporary files) are removed."""
    import pyarrow.parquet as pq

    for leftover in out.glob(".part-*.tmp"):
        leftover.unlink()
    parts = sorted(out.glob(PART_GLOB))
    if not parts:
        return set()
    table = pq.read_table(out, columns=["sha256", "model_id", "settings_hash"])
    models = set(table.column("model_id").to_pylist())
    hashes = set(table.column("settings_hash").to_pylist())
    if models - {model_id} or hashes - {settings.key()}:
        raise ValueError(f"{out} was made with another model or other alignment settings: write to a new output")
    return set(table.column("sha256").to_pylist()) - {""}


class _PartWriter:
    """Collects finished photos and writes them as Parquet parts, atomically, every `per_part` photos."""

    def __init__(self, out: Path, model_id: str, settings: AlignmentSettings, model_path: str, per_part: int,
                 report: ArchiveReport) -> None:
        self.out, self.model_id, self.settings, self.per_part, self.report = out, model_id, settings, per_part, report
        self.metadata = {"kind": "archive", "settings": asdict(settings), "model_path": model_path}
        self.run = f"{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
        self.pending: list[PhotoFaces] = []
        self.seen: set[str] = set()

    def add(self, photo: PhotoFaces) -> None:
        if photo.sha256 and photo.sha256 in self.seen:  # identical bytes under another name: kept, counted
            self.report.duplicates += 1
        self.seen.add(photo.sha256)
        self.report.processed += 1
        self.report.faces += len(photo)
        if photo.error:
            self.report.unreadable[photo.source] = photo.error
        elif not len(photo):
            self.report.without_face += 1
        self.pending.append(photo)
        if len(self.pending) >= self.per_part:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        table = FaceTable.from_photos(self.pending, self.model_id, self.settings.key())
        table.metadata = dict(self.metadata)
        table.write_parquet(self.out / f"part-{self.run}-{self.report.parts_written:06d}.parquet")
        self.report.parts_written += 1
        self.pending = []


def _detect_file(path: str, settings: AlignmentSettings, done: set[str] | frozenset[str]) -> PhotoFaces | None:
    """sha256 first (None when the output has it already), then the photo's faces with chips."""
    try:
        sha = file_sha256(path)
    except OSError as exc:
        return PhotoFaces(path, error=str(exc) or type(exc).__name__)
    if sha in done:
        return None
    photo = detect_photo(path, settings, hash_files=False)
    photo.sha256 = sha
    return photo


def embed_archive(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, model: str | os.PathLike | None = None,
                  settings: AlignmentSettings | None = None, config: ArchiveConfig | None = None,
                  progress: bool = True) -> ArchiveReport:
    """Every face of every image under `inputs` into the Parquet folder `out` (see the module doc).

    settings: detection/alignment (default: AlignmentSettings(fallback="none"): photos without a
    face get a face = -1 row). Raises FileExistsError when `out` exists and config.resume is False.
    """
    from . import models

    config = config or ArchiveConfig()
    settings = settings or AlignmentSettings(fallback="none")
    if settings.fallback.endswith("center"):
        raise ValueError("an archive never guesses a centred face: fallback must be 'cnn' or 'none'")
    model_path = str(model) if model is not None else models.path(models.FACE_RECOGNITION)
    model_id = file_sha256(model_path)
    target = Path(out)
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a folder of parts")
    if target.exists() and any(target.iterdir()) and not config.resume:
        raise FileExistsError(f"{target} exists: resume it (--resume) or choose a new output")
    target.mkdir(parents=True, exist_ok=True)
    done = _existing(target, model_id, settings)
    files = list_files(inputs)
    report = ArchiveReport(str(target), config.engine, images=len(files))
    writer = _PartWriter(target, model_id, settings, model_path, config.images_per_part, report)
    started = time.perf_counter()
    with progress_bar(progress, "archive", "img", len(files)) as bar:
        if config.engine == "local":
            photos = _run_local(files, model_path, settings, config, done, report)
        else:
            photos = _run_ray(files, model_path, settings, config, done, report)
        for photo in photos:
            if photo is None:
                report.already_done += 1
            else:
                writer.add(photo)
            bar.update()
    writer.flush()
    report.seconds = time.perf_counter() - started
    return report


def _run_local(files: list[str], model_path: str, settings: AlignmentSettings, config: ArchiveConfig,
               done: set[str], report: ArchiveReport) -> Iterator[PhotoFaces | None]:
    from .embedder import FaceEmbedder

    report.workers = config.workers or available_cpus()
    detected = ordered_map(files, lambda path: _detect_file(path, settings, done), report.workers)
    yield from with_descriptors(detected, FaceEmbedder(model_path))


# ---------------------------------------------------------------------------------------- Ray stages
def _chip_rows(photos: list[PhotoFaces | None]) -> dict[str, list]:
    """Detection stage output: one row per face (chip as bytes), or one row for a photo without a
    face / unreadable / already done; `faces_in_photo` lets the driver tell when a photo is complete."""
    rows: dict[str, list] = {k: [] for k in ("source_path", "sha256", "face", "faces_in_photo", "box", "score",
                                             "landmarks", "chip", "error", "done")}
    for photo in photos:
        if photo is None:
            continue
        n = len(photo)
        for i in range(max(n, 1)):
            rows["source_path"].append(photo.source)
            rows["sha256"].append(photo.sha256)
            rows["face"].append(i if n else -1)
            rows["faces_in_photo"].append(n)
            rows["box"].append(photo.boxes[i].tolist() if n else None)
            rows["score"].append(float(photo.scores[i]) if n else None)
            rows["landmarks"].append(photo.landmarks[i].reshape(-1).tolist() if n else None)
            rows["chip"].append(photo.chips[i].tobytes() if n and photo.chips is not None else None)
            rows["error"].append(photo.error)
            rows["done"].append(False)
    return rows


def _detection_schema():
    import pyarrow as pa

    fields = [("source_path", pa.string()), ("sha256", pa.string()), ("face", pa.int32()),
              ("faces_in_photo", pa.int32()), ("box", pa.list_(pa.int64(), 4)), ("score", pa.float64()),
              ("landmarks", pa.list_(pa.int64(), 10)), ("error", pa.string()), ("done", pa.bool_())]
    return pa.schema([*fields, ("chip", pa.binary()), ("detector", pa.string())])


class RayDetector:
    """Ray Data stage: paths -> faces with chips (the detector and landmark model load once per actor)."""

    def __init__(self, settings: dict, done: frozenset[str], threads: int) -> None:
        self.settings = AlignmentSettings(**settings)
        self.done = done
        self.threads = max(1, int(threads))
        self.instance = f"{os.getpid()}-{id(self):x}"   # models are loaded once per instance (per actor)
        self.calls = 0

    def __call__(self, batch):
        import pyarrow as pa

        paths = batch.column("path").to_pylist()
        photos = list(ordered_map(paths, lambda p: _detect_file(p, self.settings, self.done), self.threads))
        rows = _chip_rows(photos)
        already = sum(p is None for p in photos)
        for _ in range(already):  # tell the driver about skipped files, so its progress adds up
            for key in rows:
                rows[key].append(None)
            rows["done"][-1] = True
            rows["face"][-1] = -1
            rows["faces_in_photo"][-1] = 0
        self.calls += 1
        rows["detector"] = [f"{self.instance}#{self.calls}"] * len(rows["done"])
        return pa.Table.from_pydict(rows, schema=_detection_schema())


def _embed_chip_table(batch, embedder, instance: str):
    """Detection-stage rows -> the same rows with `embedding` (and `embedder`) instead of `chip`."""
    import pyarrow as pa

    chips = batch.column("chip").to_pylist()
    present = [i for i, c in enumerate(chips) if c is not None]
    vectors = np.zeros((len(chips), DESCRIPTOR_SIZE), np.float32)
    if present:
        array = np.frombuffer(b"".join(chips[i] for i in present), np.uint8).reshape(len(present), 150, 150, 3)
        vectors[present] = embedder.embed_chips(array)
    missing = np.ones(len(chips), bool)
    missing[present] = False
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DESCRIPTOR_SIZE,
                                                  mask=pa.array(missing))
    table = batch.drop_columns(["chip"]).append_column("embedder", pa.array([instance] * len(chips), pa.string()))
    return table.append_column("embedding", embedding)


class RayEmbedder:
    """Ray Data stage: chips -> descriptors (the face model loads once per actor; threads = its CPUs)."""

    def __init__(self, model_path: str, threads: float) -> None:
        from .embedder import FaceEmbedder

        self.embedder = FaceEmbedder(model_path, threads=max(1, int(threads)))
        self.instance = f"{os.getpid()}-{id(self):x}"

    def __call__(self, batch):
        return _embed_chip_table(batch, self.embedder, self.instance)


class RayDetectAndEmbed(RayDetector):
    """Both stages in one actor (stages="fused"): no chips cross processes; each actor loads the
    detector, the landmark model and the face model once."""

    def __init__(self, settings: dict, done: frozenset[str], threads: int, model_path: str) -> None:
        from .embedder import FaceEmbedder

        super().__init__(settings, done, threads)
        self.embedder = FaceEmbedder(model_path, threads=self.threads)

    def __call__(self, batch):
        return _embed_chip_table(super().__call__(batch), self.embedder, self.instance)


def start_local_ray(num_cpus: int) -> None:
    """ray.init on this machine with `num_cpus` CPUs (may exceed the cores), quiet, with the workers
    importing the same pyfacedlib as this process (a checkout or an installed package)."""
    import ray

    package_parent = str(Path(__file__).resolve().parents[1])
    paths = [package_parent, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    # Ray's workers start in the directory ray.init was called from and search it first: started
    # from a source checkout without its compiled core, they would import that. Start them in the
    # folder that holds this pyfacedlib instead.
    here = os.getcwd()
    os.chdir(package_parent)
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(paths)}})
    finally:
        os.chdir(here)


def _run_ray(files: list[str], model_path: str, settings: AlignmentSettings, config: ArchiveConfig,
             done: set[str], report: ArchiveReport) -> Iterator[PhotoFaces | None]:
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError('engine "ray" needs Ray Data: pip install "pyfacedlib[ray]"') from exc
    import pyarrow as pa

    started_here = False
    if not ray.is_initialized():
        if config.address is None:
            workers = config.workers or available_cpus()
            embedding_cpus = int(np.ceil(config.embed_actors * config.embed_cpus)) if config.split_stages else 0
            start_local_ray(workers + embedding_cpus)
        else:
            ray.init(address=config.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started_here = True
    try:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        embedding_cpus = int(np.ceil(config.embed_actors * config.embed_cpus)) if config.split_stages else 0
        workers = config.workers or max(1, cluster_cpus - embedding_cpus)
        report.workers = workers
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        # blocks of images_per_task photos, smaller when there are too few photos to keep every worker busy
        step = max(1, min(config.images_per_task, -(-len(files) // workers)))
        blocks = [pa.table({"path": files[i:i + step]}) for i in range(0, len(files), step)] or [
            pa.table({"path": pa.array([], pa.string())})]
        # Ray Data's actor pools restart lost actors and retry their tasks by default (max_restarts=-1,
        # max_task_retries=-1); errors inside a photo are error rows, never task failures.
        ds: Any = ray.data.from_arrow(blocks)
        detection = {"settings": asdict(settings), "done": frozenset(done), "threads": 1}
        if config.split_stages:
            ds = ds.map_batches(RayDetector, batch_size=step, batch_format="pyarrow", fn_constructor_kwargs=detection,
                                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
            ds = ds.map_batches(RayEmbedder, batch_size=64, batch_format="pyarrow",
                                fn_constructor_kwargs={"model_path": model_path, "threads": config.embed_cpus},
                                compute=ray.data.ActorPoolStrategy(size=config.embed_actors),
                                num_cpus=config.embed_cpus, num_gpus=config.embed_gpus or None)
        else:
            ds = ds.map_batches(RayDetectAndEmbed, batch_size=step, batch_format="pyarrow",
                                fn_constructor_kwargs={**detection, "model_path": model_path},
                                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
        yield from _assemble(ds.iter_batches(batch_format="pyarrow", batch_size=None), report)
    finally:
        if started_here:
            ray.shutdown()


def _assemble(batches: Iterable, report: ArchiveReport) -> Iterator[PhotoFaces | None]:
    """Rows from the embedding stage (any order, a photo's faces possibly split across batches) ->
    one PhotoFaces per photo once all its faces have arrived; None per skipped file. Counts the
    actor instances that served each stage and the batches into report.actors."""
    waiting: dict[str, list[dict]] = {}
    instances: dict[str, set[str]] = {"detector": set(), "embedder": set()}
    calls: set[str] = set()
    for batch in batches:
        calls.update(batch.column("detector").to_pylist())
        instances["detector"].update(c.split("#")[0] for c in batch.column("detector").to_pylist())
        instances["embedder"].update(batch.column("embedder").to_pylist())
        report.actors = {"detector": len(instances["detector"]), "embedder": len(instances["embedder"]),
                         "detection_batches": len(calls)}
        for row in batch.to_pylist():
            if row["done"]:
                yield None
                continue
            key = f"{row['source_path']}\0{row['sha256']}"
            rows = waiting.setdefault(key, [])
            rows.append(row)
            if len(rows) >= max(row["faces_in_photo"], 1):
                del waiting[key]
                yield _photo_from_rows(rows)
    if waiting:  # pragma: no cover - a stage lost rows: say so instead of writing half a photo
        raise RuntimeError(f"{len(waiting)} photos came back incomplete from the Ray pipeline")


def _photo_from_rows(rows: list[dict]) -> PhotoFaces:
    rows = sorted(rows, key=lambda r: r["face"])
    first = rows[0]
    photo = PhotoFaces(first["source_path"], first["sha256"], error=first["error"] or "")
    faces = [r for r in rows if r["face"] >= 0]
    if faces:
        photo.boxes = np.array([r["box"] for r in faces], np.int64)
        photo.scores = np.array([r["score"] for r in faces], np.float64)
        photo.landmarks = np.array([r["landmarks"] for r in faces], np.int64).reshape(-1, 5, 2)
        photo.descriptors = np.array([r["embedding"] for r in faces], np.float32)
    return photo
