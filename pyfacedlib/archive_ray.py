"""The Ray engine of pyfacedlib.archive (the optional dependency: pip install "pyfacedlib[ray]").

Ray Data: paths -> detection actors -> embedding actors -> the driver (pyfacedlib.archive's part
writer). Every stage emits face-table Arrow batches (pyfacedlib.facetable.schema, made by
facetable.photo_batch, the local engine's conversion too); between split stages the batches carry
one more column, `chip` (the aligned chip's bytes), which the embedding stage turns into
`embedding` and drops. Each batch holds whole photos and carries, in its schema metadata
(BATCH_KEY), its row and photo counts, the files it skipped as already done and the actor
instances that made it: the driver checks the counts (a batch Ray split or merged would fail loudly
instead of writing half a photo) and reports the actors.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._archive_base import BATCH_KEY, ArchiveConfig, ArchiveReport, detect_file, photo_starts
from ._system import available_cpus
from .align import AlignmentSettings
from .facetable import CHIP_COLUMN, DESCRIPTOR_SIZE, DETECTOR_COLUMN, IN_FLIGHT_COLUMNS, photo_batch
from .photos import ordered_map

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["RayDetectAndEmbed", "RayDetector", "RayEmbedder", "embed_chip_batch", "run_ray", "start_local_ray"]


def _batch_info(batch) -> dict:
    raw = (batch.schema.metadata or {}).get(BATCH_KEY)
    return json.loads(raw) if raw else {}


def _with_info(batch, **info: Any):
    """The batch (as a pyarrow Table, what Ray Data takes) with `info` merged into its BATCH_KEY metadata."""
    import pyarrow as pa

    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    merged = {**_batch_info(table), **info}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), BATCH_KEY: json.dumps(merged).encode()})


def embed_chip_batch(batch, embedder) -> pa.Table:
    """A detection-stage batch (face-table schema + `chip`, `detector`) -> the face-table batch:
    `embedding` and `quality` computed from the chips (rows with a face), the in-flight columns
    dropped; metadata kept."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    chips = table.column(CHIP_COLUMN).combine_chunks()
    valid = np.asarray(chips.is_valid().to_numpy(zero_copy_only=False), bool)
    n = table.num_rows
    vectors = np.zeros((n, DESCRIPTOR_SIZE), np.float32)
    quality = np.full(n, np.nan, np.float32)
    if valid.any():
        present = pc.filter(chips, pa.array(valid))
        width = present.type.byte_width
        side = int(round((width // 3) ** 0.5))
        data = np.frombuffer(present.buffers()[1], np.uint8, count=len(present) * width,
                             offset=present.offset * width)
        face_chips = data.reshape(len(present), side, side, 3)
        vectors[valid] = embedder.embed_chips(face_chips)
        mask = pa.array(valid)
        boxes = np.asarray(pc.filter(table.column("box").combine_chunks(), mask).flatten(), np.int64).reshape(-1, 4)
        scores = np.asarray(pc.filter(table.column("score").combine_chunks(), mask), np.float64)
        found_by = np.asarray(pc.filter(table.column(DETECTOR_COLUMN).combine_chunks(), mask).to_pylist(), object)
        for detector in set(found_by.tolist()):
            rows = found_by == detector
            quality[np.flatnonzero(valid)[rows]] = embedder.face_quality(
                scores[rows], boxes[rows], face_chips[rows], vectors[valid][rows], detector or "")
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), DESCRIPTOR_SIZE,
                                                  mask=pa.array(~valid) if (~valid).any() else None)
    index = table.column_names.index("embedding")
    table = table.set_column(index, table.schema.field("embedding"), embedding)
    index = table.column_names.index("quality")
    table = table.set_column(index, table.schema.field("quality"), pa.array(quality, pa.float32(),
                                                                             mask=np.isnan(quality)))
    return table.drop_columns(list(IN_FLIGHT_COLUMNS)).replace_schema_metadata(table.schema.metadata)


class RayDetector:
    """Ray Data stage: paths -> face-table batches with chips (the detector and landmark model load
    once per actor)."""

    def __init__(self, settings: dict, done: frozenset[str], threads: int, model_id: str = "") -> None:
        self.settings = AlignmentSettings(**settings)
        self.done = done
        self.threads = max(1, int(threads))
        self.model_id = model_id
        self.instance = f"{os.getpid()}-{id(self):x}"   # models are loaded once per instance (per actor)
        self.calls = 0

    def __call__(self, batch):
        paths = batch.column("path").to_pylist()
        results = list(ordered_map(paths, lambda p: detect_file(p, self.settings, self.done), self.threads))
        photos = [p for p in results if p is not None]
        self.calls += 1
        rows = photo_batch(photos, self.model_id, self.settings.key(), chips=True)
        return _with_info(rows, rows=rows.num_rows, photos=len(photos), skipped=len(results) - len(photos),
                          detector=f"{self.instance}#{self.calls}")


class RayEmbedder:
    """Ray Data stage: chips -> descriptors (the face model loads once per actor; threads = its CPUs)."""

    def __init__(self, model_path: str, threads: float, embedder: dict | None = None) -> None:
        from .embedder import FaceEmbedder

        self.embedder = FaceEmbedder(model_path, threads=max(1, int(threads)), **(embedder or {}))
        self.instance = f"{os.getpid()}-{id(self):x}"

    def __call__(self, batch):
        return _with_info(embed_chip_batch(batch, self.embedder), embedder=self.instance)


class RayDetectAndEmbed(RayDetector):
    """Both stages in one actor (stages="fused"): no chips cross processes; each actor loads the
    detector, the landmark model and the face model once."""

    def __init__(self, settings: dict, done: frozenset[str], threads: int, model_path: str,
                 model_id: str = "", embedder: dict | None = None) -> None:
        from .embedder import FaceEmbedder

        super().__init__(settings, done, threads, model_id)
        self.embedder = FaceEmbedder(model_path, threads=self.threads, **(embedder or {}))

    def __call__(self, batch):
        return _with_info(embed_chip_batch(super().__call__(batch), self.embedder), embedder=self.instance)


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


def run_ray(files: list[str], model_path: str, model_id: str, settings: AlignmentSettings, config: ArchiveConfig,
            done: set[str], report: ArchiveReport) -> Iterator[tuple[Any, int]]:
    """(face-table batch, files skipped as done) for the files, from Ray Data actors; fills
    report.workers and report.actors."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise ImportError('engine "ray" needs Ray Data: pip install "pyfacedlib[ray]"') from exc
    import pyarrow as pa

    started_here = False
    embedding_cpus = int(np.ceil(config.embed_actors * config.embed_cpus)) if config.split_stages else 0
    if not ray.is_initialized():
        if config.address is None:
            start_local_ray((config.workers or available_cpus()) + embedding_cpus)
        else:
            ray.init(address=config.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        started_here = True
    try:
        cluster_cpus = int(ray.cluster_resources().get("CPU", 1))
        workers = config.workers or max(1, cluster_cpus - embedding_cpus)
        report.workers = workers
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        # blocks of images_per_task photos, smaller when there are too few photos to keep every worker busy
        step = max(1, min(config.images_per_task, -(-len(files) // workers)))
        blocks = [pa.table({"path": files[i:i + step]}) for i in range(0, len(files), step)] or [
            pa.table({"path": pa.array([], pa.string())})]
        # Ray Data's actor pools restart lost actors and retry their tasks by default (max_restarts=-1,
        # max_task_retries=-1); errors inside a photo are error rows, never task failures. batch_size=None:
        # a block is one batch, never split or merged, so each batch holds whole photos.
        ds: Any = ray.data.from_arrow(blocks)
        detection = {"settings": asdict(settings), "done": frozenset(done), "threads": 1, "model_id": model_id}
        if config.split_stages:
            ds = ds.map_batches(RayDetector, batch_size=None, batch_format="pyarrow", fn_constructor_kwargs=detection,
                                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
            ds = ds.map_batches(RayEmbedder, batch_size=None, batch_format="pyarrow",
                                fn_constructor_kwargs={"model_path": model_path, "threads": config.embed_cpus,
                                                       "embedder": config.embedder_options()},
                                compute=ray.data.ActorPoolStrategy(size=config.embed_actors),
                                num_cpus=config.embed_cpus, num_gpus=config.embed_gpus or None)
        else:
            ds = ds.map_batches(RayDetectAndEmbed, batch_size=None, batch_format="pyarrow",
                                fn_constructor_kwargs={**detection, "model_path": model_path,
                                                       "embedder": config.embedder_options()},
                                compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=1)
        instances: dict[str, set[str]] = {"detector": set(), "embedder": set()}
        calls: set[str] = set()
        for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
            info = _batch_info(batch)
            if info.get("rows") != batch.num_rows or info.get("photos") != len(photo_starts(batch)):
                # pragma: no cover - Ray split or merged a batch: say so instead of writing half a photo
                raise RuntimeError(f"a batch of the Ray pipeline came back with {batch.num_rows} rows, its stages "
                                   f"made {info.get('rows')}: photos would be incomplete")
            calls.add(info["detector"])
            instances["detector"].add(info["detector"].split("#")[0])
            instances["embedder"].add(info["embedder"])
            report.actors = {"detector": len(instances["detector"]), "embedder": len(instances["embedder"]),
                             "detection_batches": len(calls)}
            yield batch, int(info.get("skipped", 0))
    finally:
        if started_here:
            ray.shutdown()


_run_ray = run_ray
