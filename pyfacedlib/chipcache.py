"""Aligned chips of one-face-per-image datasets, cached on disk, and the one way in (load_faces).

A cache over pyfacedlib.align (align_one: the face nearest the centre, with the settings' fallback).
Conversion, fine-tuning and benchmarks take their faces from load_faces, so the same image is
aligned the same way everywhere.
"""
from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import _atomic
from ._system import available_cpus, file_sha256
from .align import CENTER_BOX, CHIP_SIZE, FALLBACKS, AlignmentSettings, align_one
from .faces import ChipRecord, FaceInput, FaceSet

if TYPE_CHECKING:
    pass

__all__ = ["CENTER_BOX", "FALLBACKS", "AlignmentSettings", "ChipCache", "default_cache_dir", "load_faces"]


def default_cache_dir() -> Path:
    """$PYFACEDLIB_CACHE, else $XDG_CACHE_HOME/pyfacedlib/chips (~/.cache/pyfacedlib/chips)."""
    if os.environ.get("PYFACEDLIB_CACHE"):
        return Path(os.environ["PYFACEDLIB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pyfacedlib" / "chips"


def _align_one(args: tuple[str, str, AlignmentSettings, str]) -> ChipRecord:
    """Worker: align one image (pyfacedlib.align.align_one) and store its chip as .npy named by the file's hash."""
    from .errors import ImageError
    from .images import load_image

    source, sha, settings, folder = args
    try:
        image = load_image(source, exif_orientation=settings.exif_orientation, max_pixels=settings.max_image_pixels)
    except ImageError as exc:
        return ChipRecord(source, sha, "skipped", str(exc))
    try:
        face = align_one(image, settings)
    except (RuntimeError, ValueError, MemoryError) as exc:  # one odd image must not stop a training set
        return ChipRecord(source, sha, "skipped", f"face detection failed: {type(exc).__name__}: {exc}")
    if face is None:
        return ChipRecord(source, sha, "skipped", "no face detected")
    buffer = io.BytesIO()
    np.save(buffer, face.chip)
    _atomic.write_bytes(Path(folder) / f"{sha}.npy", buffer.getvalue(), clean=False)  # ChipCache cleans the folder
    return ChipRecord(source, sha, face.status, "", [int(v) for v in face.box], face.landmarks.tolist(),
                      face.faces_found)


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
        for child in children:
            if child.stdout is not None:  # each reader drained its pipe to the end
                child.stdout.close()
        if any(failed):
            raise RuntimeError(f"an alignment worker process failed (exit codes {failed})")


def _aligning(settings: dict | None) -> dict | None:
    """The alignment settings that decide a chip (not max_image_pixels: which images are refused)."""
    return None if settings is None else {k: v for k, v in settings.items() if k != "max_image_pixels"}


def _retry(reason: str) -> bool:
    """A skipped image worth trying again: a transient failure (out of memory, an I/O error), or
    refused for its size (the limit may have been raised since)."""
    from .errors import error_kind_of_message

    return error_kind_of_message(reason) == "transient" or "max_image_pixels" in reason


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
            if _aligning(data.get("settings")) == _aligning(asdict(self.settings)):
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
        hashes: dict[str, str] = {}
        for source in unique:
            try:
                hashes[source] = file_sha256(source) if os.path.isfile(source) else ""
            except OSError as exc:  # permission denied, vanished since listed, an I/O error: listed, not fatal
                hashes[source] = ""
                self._records[source] = asdict(ChipRecord(source, "", "skipped", f"cannot read {source}: {exc}"))
        by_sha = {record["sha256"]: record for record in self._records.values() if record["sha256"]}
        todo = []
        for source in unique:
            if not hashes[source] and self._records.get(source, {}).get("reason", "").startswith("cannot read"):
                continue  # could not be hashed just now: skipped with the reason
            cached = self._records.get(source)
            if not (cached and cached["sha256"] == hashes[source]):
                # the same bytes under another name (a moved, copied or linked folder): same chip
                cached = by_sha.get(hashes[source])
                if cached is not None:
                    cached = self._records[source] = {**cached, "source": source}
            if cached and cached["status"] == "skipped" and _retry(cached["reason"]):
                cached = None
            if cached and (cached["status"] == "skipped" or (self.folder / f"{hashes[source]}.npy").exists()):
                continue
            todo.append(source)
        if todo:
            _atomic.remove_stale_temporaries(self.folder / "x", name_pattern="*")  # chips of killed runs
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



def _ready_chips(paths: list[str]) -> np.ndarray | None:
    """The images themselves when every one is already a 150x150 chip (no alignment needed), else None."""
    from PIL import Image

    from .errors import ImageError
    from .images import _pillow_formats, load_image

    for path in paths:
        try:
            with Image.open(path, formats=_pillow_formats()) as img:
                if img.size != (CHIP_SIZE, CHIP_SIZE):
                    return None
        except (OSError, ValueError):
            return None
    try:
        return np.stack([load_image(p) for p in paths])
    except ImageError:  # one that cannot be decoded after all: the chip cache lists it in `skipped`
        return None


def load_faces(data: FaceInput, cache_dir: str | os.PathLike | None = None,
               settings: AlignmentSettings | None = None, progress: bool = False) -> FaceSet:
    """Faces from whatever a user has, always aligned the same way (through the chip cache):

    - a FaceSet (returned as it is), chips (N, 150, 150, 3) uint8, or (chips, labels);
    - a folder: every image under it, labelled by datasets.labelled_files' rule (root/Name/**/x.jpg
      and root/Name.jpg are Name's); folders of ready 150x150 chips are used as they are;
    - an IdentityDataset.
    Unreadable images and images without a face are listed in `skipped`.
    """
    from .datasets import IdentityDataset, labelled_files

    if isinstance(data, FaceSet):
        return data
    if isinstance(data, np.ndarray):
        return FaceSet.from_chips(data)
    if isinstance(data, tuple):
        if len(data) != 2:
            raise TypeError("expected (chips, labels)")
        chips, labels = data
        if len(labels) != len(chips):
            raise ValueError(f"{len(chips)} chips but {len(labels)} labels")
        return FaceSet.from_chips(chips, labels)
    if isinstance(data, IdentityDataset):
        paths, labels = list(data.paths), list(data.labels)
    elif isinstance(data, (str, os.PathLike)):
        if not Path(data).is_dir():
            raise NotADirectoryError(f"not a folder: {data}")
        people = labelled_files(data, labelled=True)
        if not people:
            raise ValueError(f"no images found under {data}")
        paths, labels = list(people), [str(name) for name in people.values()]
    else:
        raise TypeError("faces must be a FaceSet, chips (N,150,150,3) uint8, (chips, labels), a folder of images "
                        f"or an IdentityDataset; got {type(data).__name__}")
    ready = _ready_chips(paths)
    if ready is not None:
        return FaceSet(ready, np.asarray(labels), paths)
    return ChipCache(cache_dir or default_cache_dir(), settings).faces(paths, labels, progress=progress)
