"""The one alignment path: images -> detected, landmarked, aligned face chips, cached on disk.

Conversion, fine-tuning, benchmarks and everything after take their faces from here
(pyfacedlib.faces.load_faces), so the same photo is aligned the same way everywhere.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import _atomic
from ._system import available_cpus, file_sha256
from .faces import ChipRecord, FaceSet


def default_cache_dir() -> Path:
    """$PYFACEDLIB_CACHE, else $XDG_CACHE_HOME/pyfacedlib/chips (~/.cache/pyfacedlib/chips)."""
    if os.environ.get("PYFACEDLIB_CACHE"):
        return Path(os.environ["PYFACEDLIB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyfacedlib" / "chips"


FALLBACKS = ("cnn+center", "cnn", "center", "none")


@dataclass(frozen=True)
class AlignmentSettings:
    """How chips are made; a cache is reused only when these match."""

    detector: str = "hog"
    upsample: int = 1
    size: int = 150
    padding: float = 0.25
    # When `detector` finds no face: 'cnn+center' (try dlib's CNN detector, then landmarks in a
    # centred box), 'cnn', 'center', or 'none' (skip the image).
    fallback: str = "cnn+center"
    # smallest face wanted in pixels: large photos are scanned on a resized copy (align.detection_scale)
    min_face_size: float | None = None
    exif_orientation: bool = True  # turn phone photos upright as their EXIF tag says
    version: int = 2           # bump when the alignment code changes

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        if self.detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', got {self.detector!r}")

    def key(self) -> str:
        """Short hash naming the cache folder of these settings."""
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


# Where a centred face sits when no detector finds it: the median HOG box on LFW deep-funneled
# (250x250: left 67, top 80, right 175, bottom 187), relative to the image size.
CENTER_BOX = (0.268, 0.32, 0.70, 0.748)


def _align_one(args: tuple[str, str, AlignmentSettings, str]) -> ChipRecord:
    """Worker: detect, align and store one chip (as .npy named by the file's hash)."""
    from . import align
    from .errors import ImageError
    from .images import load_image

    source, sha, settings, folder = args
    try:
        image = load_image(source, exif_orientation=settings.exif_orientation)
    except ImageError as exc:
        return ChipRecord(source, sha, "skipped", str(exc))
    boxes = align.detect(image, detector=settings.detector, upsample=settings.upsample,
                         min_face_size=settings.min_face_size)
    status = "detected"
    if not len(boxes) and settings.fallback.startswith("cnn") and settings.detector != "cnn":
        boxes = align.detect(image, detector="cnn", upsample=settings.upsample, min_face_size=settings.min_face_size)
        status = "detected_cnn"
    if len(boxes):
        box = boxes[align.nearest_to_center(boxes, image.shape)]
    elif settings.fallback.endswith("center"):
        h, w = image.shape[:2]
        box = np.array([round(CENTER_BOX[0] * w), round(CENTER_BOX[1] * h),
                        round(CENTER_BOX[2] * w), round(CENTER_BOX[3] * h)])
        status = "fallback"
    else:
        return ChipRecord(source, sha, "skipped", "no face detected")
    points = align.landmarks(image, box)
    chip = align.extract_chip(image, points, size=settings.size, padding=settings.padding)
    buffer = io.BytesIO()
    np.save(buffer, chip)
    _atomic.write_bytes(Path(folder) / f"{sha}.npy", buffer.getvalue())
    return ChipRecord(source, sha, status, "", [int(v) for v in box], points.tolist(), int(len(boxes)))


def _align_in_processes(jobs: list, workers: int, on_record) -> None:
    """Runs the jobs in `workers` fresh interpreters (pyfacedlib._align_worker): no fork
    of a process that may hold BLAS/training threads, no re-import of the caller's __main__."""
    import subprocess
    import tempfile
    import threading

    # -I: no current directory (a checkout's pyfacedlib/ without its extension) on sys.path; the
    # worker imports exactly this pyfacedlib, installed or built in place.
    package_parent = str(Path(__file__).resolve().parents[1])
    launcher = f"import sys; sys.path.insert(0, {package_parent!r}); from pyfacedlib._align_worker import main; main()"
    lock = threading.Lock()
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for w in range(workers):
            part = [[s, sha, asdict(settings), folder] for s, sha, settings, folder in jobs[w::workers]]
            if not part:
                continue
            job_file = Path(tmp) / f"jobs{w}.json"
            job_file.write_text(json.dumps(part))
            children.append(subprocess.Popen([sys.executable, "-I", "-c", launcher, str(job_file)],
                                             stdout=subprocess.PIPE, text=True))

        def drain(child) -> None:
            for line in child.stdout:
                with lock:
                    on_record(ChipRecord(**json.loads(line)))

        readers = [threading.Thread(target=drain, args=(c,)) for c in children]
        for r in readers:
            r.start()
        for r in readers:
            r.join()
        failed = [c.wait() for c in children]
        if any(failed):
            raise RuntimeError(f"an alignment worker process failed (exit codes {failed})")


class ChipCache:
    """Aligned chips on disk: <cache_dir>/<settings key>/<sha256 of source>.npy plus manifest.json
    (source file, its hash, detector, landmarks, box, alignment settings, status).

    Chips are reused when the settings and the source file's hash match, and rebuilt otherwise.
    """

    def __init__(self, cache_dir: str | os.PathLike, settings: AlignmentSettings | None = None) -> None:
        self.settings = settings or AlignmentSettings()
        self.folder = Path(cache_dir) / self.settings.key()
        self.folder.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.folder / "manifest.json"
        self._records: dict[str, dict] = {}
        if self.manifest_path.exists():
            data = json.loads(self.manifest_path.read_text())
            if data.get("settings") == asdict(self.settings):
                self._records = data["records"]

    def faces(self, sources: Sequence[str | os.PathLike], labels: Sequence[str] | None = None,
              workers: int | None = None, progress: bool = True) -> FaceSet:
        """The aligned faces of `sources` (aligned now where not cached, in `workers` processes), in
        source order, with their labels and alignment records; images without a chip are listed in
        `skipped` with the reason."""
        from tqdm import tqdm

        files = [str(s) for s in sources]
        names = [str(n) for n in labels] if labels is not None else [""] * len(files)
        if len(names) != len(files):
            raise ValueError(f"{len(files)} sources but {len(names)} labels")
        unique = list(dict.fromkeys(files))
        hashes = {s: (file_sha256(s) if os.path.isfile(s) else "") for s in unique}
        by_sha = {record["sha256"]: record for record in self._records.values() if record["sha256"]}
        todo = []
        for source in unique:
            cached = self._records.get(source)
            if not (cached and cached["sha256"] == hashes[source]):
                # the same bytes under another name (a moved, copied or linked folder): same chip
                cached = by_sha.get(hashes[source])
                if cached is not None:
                    cached = self._records[source] = {**cached, "source": source}
            if cached and (cached["status"] == "skipped" or (self.folder / f"{hashes[source]}.npy").exists()):
                continue
            todo.append(source)
        if todo:
            jobs = [(s, hashes[s], self.settings, str(self.folder)) for s in todo]
            workers = workers or available_cpus()
            bar = tqdm(total=len(jobs), desc="aligning", unit="img", disable=not progress)
            try:
                results: list[ChipRecord] = []

                def collect(record: ChipRecord) -> None:
                    results.append(record)
                    bar.update()

                if workers > 1 and len(jobs) > 1:
                    _align_in_processes(jobs, min(workers, len(jobs)), collect)
                else:
                    for job in jobs:
                        collect(_align_one(job))
            finally:
                bar.close()
            for record in results:
                self._records[record.source] = asdict(record)
            _atomic.write_text(self.manifest_path, json.dumps(
                {"settings": asdict(self.settings), "records": self._records}, indent=0))
        kept = [i for i, source in enumerate(files) if self._records[source]["status"] != "skipped"]
        chips = np.zeros((len(kept), self.settings.size, self.settings.size, 3), np.uint8)
        for row, i in enumerate(kept):
            chips[row] = np.load(self.folder / f"{self._records[files[i]]['sha256']}.npy")
        skipped = {s: self._records[s]["reason"] for s in unique if self._records[s]["status"] == "skipped"}
        return FaceSet(chips, np.asarray([names[i] for i in kept]), [files[i] for i in kept],
                       [ChipRecord(**self._records[files[i]]) for i in kept], skipped)
