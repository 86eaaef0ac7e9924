"""What both archive engines share (pyfacedlib.archive's local engine, pyfacedlib.archive_ray's Ray
engine): the settings, the report, how one file is read, and the conventions of the face-table
batches they hand the driver. The public names are pyfacedlib.archive's."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._config import option
from ._system import file_sha256
from .align import AlignmentSettings
from .embedder import EmbedderSettings
from .errors import error_kind
from .photos import PhotoFaces, detect_photo

ENGINES = ("local", "ray")
STAGES = ("auto", "split", "fused")
# schema metadata of a batch on its way to the driver (not written into parts): JSON with the rows
# and photos it holds, files skipped as already done, and the actor instances that made it
BATCH_KEY = b"pyfacedlib.batch"


@dataclass(frozen=True)
class ArchiveConfig:
    """How an archive is processed (each field's help is also its command-line option's).

    engine: "local" or "ray". workers: detection threads (local) or detection actors (ray); None =
    the CPUs of this machine (local) or of the Ray cluster less the embedding actors' (ray).
    address: Ray cluster to join ("auto": the running one, "ray://host:10001"...); None starts a
    Ray instance on this machine with workers + embed_actors CPUs. embed_actors / embed_cpus /
    embed_gpus: the embedding stage (ray). images_per_part: photos per Parquet part (what a kill can
    lose at most, besides the photos in flight). resume: continue an existing output. stages: see
    split_stages.
    """

    engine: str = option("local", "where to run: this machine's threads, or Ray actors (pip install "
                                  "'pyfacedlib[ray]')", choices=ENGINES)
    workers: int | None = option(None, "detection threads (local) or detection actors (ray); default: the CPUs "
                                       "(ray: of the cluster, less the embedding actors')")
    address: str | None = option(None, "ray: the cluster to join ('auto': the running one, 'ray://host:10001'); "
                                       "default: start Ray on this machine")
    embed_actors: int = option(1, "ray, split stages: embedding actors")
    embed_cpus: float = option(1.0, "ray, split stages: CPUs per embedding actor (its threads)")
    embed_gpus: float = option(0.0, "ray: GPUs per embedding actor (> 0 splits the stages under --stages auto)")
    images_per_part: int = option(1000, "photos per Parquet part (at most what a kill loses, besides photos "
                                        "in flight)")
    images_per_task: int = option(32, "ray: photos per detection task")
    resume: bool = option(False, "continue an existing output: skip the files whose bytes (sha256) it holds")
    stages: str = option("auto", "ray: detection and embedding in separate actors ('split', what GPU embedding "
                                  "needs) or the same ('fused'); auto: split when --embed-gpus > 0", choices=STAGES)
    backend: str | None = option(None, "the embedding stage's forward pass (FaceEmbedder's backend); None: the "
                                       "folded CPU pass", cli=False)
    onnx_providers: str | None = option(None, "backend 'onnx': onnxruntime's execution providers in order, "
                                              "comma-separated; None: CUDA when onnxruntime has it, else CPU",
                                        cli=False)

    def embedder_options(self) -> dict[str, Any]:
        """FaceEmbedder's keyword arguments for the embedding stage (backend and providers)."""
        return EmbedderSettings(self.backend, self.onnx_providers).kwargs()

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
        if self.stages not in STAGES:
            raise ValueError(f"stages must be 'auto', 'split' or 'fused', got {self.stages!r}")
        if self.images_per_part < 1 or self.images_per_task < 1:
            raise ValueError("images_per_part and images_per_task must be >= 1")
        EmbedderSettings(self.backend, self.onnx_providers)  # ValueError for a backend or providers it refuses


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


def photo_starts(batch) -> np.ndarray:
    """Row numbers where a photo starts in a face-table batch (its rows are contiguous; the first
    has face 0, or -1 for a photo without a face)."""
    return np.flatnonzero(np.asarray(batch.column("face").to_numpy(zero_copy_only=False)) <= 0)


def detect_file(path: str, settings: AlignmentSettings, done: set[str] | frozenset[str]) -> PhotoFaces | None:
    """sha256 first (None when the output has it already), then the photo's faces with chips."""
    try:
        sha = file_sha256(path)
    except OSError as exc:
        photo = PhotoFaces(path, error=str(exc) or type(exc).__name__)
        photo.error_kind = error_kind(exc)
        return photo
    if sha in done:
        return None
    photo = detect_photo(path, settings, hash_files=False)
    photo.sha256 = sha
    return photo
