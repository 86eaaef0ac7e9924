"""Face datasets: identity folders, the LFW protocol files, identity-disjoint splits, degradations,
and an aligned-chip cache (detect + align once, reuse while the settings match)."""
from __future__ import annotations

import hashlib
import io
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from . import _atomic
from ._system import available_cpus, file_sha256
from .faces import IMAGE_SUFFIXES

# ------------------------------------------------------------------------------------------------
# Identity folders


@dataclass
class IdentityDataset:
    """Images grouped by identity: root/Name/*.jpg."""

    root: Path
    paths: list[str]
    labels: list[str]

    @property
    def identities(self) -> list[str]:
        """Identity names, sorted."""
        return sorted(set(self.labels))

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, identities: Iterable[str]) -> "IdentityDataset":
        """Only the images of `identities`."""
        keep = set(identities)
        pairs = [(p, l) for p, l in zip(self.paths, self.labels) if l in keep]
        return IdentityDataset(self.root, [p for p, _ in pairs], [l for _, l in pairs])

    def with_min_images(self, minimum: int) -> "IdentityDataset":
        """Only identities that have at least `minimum` images."""
        counts: dict[str, int] = {}
        for label in self.labels:
            counts[label] = counts.get(label, 0) + 1
        return self.subset(name for name, n in counts.items() if n >= minimum)


def identity_folders(root: str | os.PathLike) -> IdentityDataset:
    """Reads root/Name/image files. Raises NotADirectoryError / ValueError when there are no images."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"dataset folder not found: {root}")
    paths, labels = [], []
    for person in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(p for p in person.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            paths.append(str(image))
            labels.append(person.name)
    if not paths:
        raise ValueError(f"no images found in identity folders under {root} (expected root/Name/*.jpg)")
    return IdentityDataset(root, paths, labels)


def identity_split(identities: Sequence[str], fractions: Sequence[float], seed: int = 0) -> list[list[str]]:
    """Splits identities (not images) into disjoint groups of the given fractions."""
    if abs(sum(fractions) - 1) > 1e-9 or any(f < 0 for f in fractions):
        raise ValueError(f"fractions must be >= 0 and sum to 1, got {fractions}")
    order = [identities[i] for i in np.random.default_rng(seed).permutation(len(identities))]
    bounds = np.round(np.cumsum([0, *fractions]) * len(order)).astype(int)
    return [sorted(order[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


# ------------------------------------------------------------------------------------------------
# LFW protocol files


@dataclass(frozen=True)
class Pair:
    """One LFW pair: two images, same person or not, and its fold."""

    name1: str
    index1: int
    name2: str
    index2: int
    same: bool
    fold: int


def lfw_image(lfw_images: str | os.PathLike, name: str, index: int) -> str:
    """Path of LFW image `index` (1-based) of `name`: root/Name/Name_0001.jpg."""
    return str(Path(lfw_images) / name / f"{name}_{index:04d}.jpg")


def _parse_pair(fields: list[str], fold: int, where: str) -> Pair:
    if len(fields) == 3:
        return Pair(fields[0], int(fields[1]), fields[0], int(fields[2]), True, fold)
    if len(fields) == 4:
        return Pair(fields[0], int(fields[1]), fields[2], int(fields[3]), False, fold)
    raise ValueError(f"{where}: expected 'name i j' or 'name1 i name2 j', got {' '.join(fields)!r}")


def read_lfw_pairs(path: str | os.PathLike) -> list[Pair]:
    """pairs.txt (header 'folds n': each fold n same then n different pairs) or
    pairsDevTrain/DevTest.txt (header 'n': n same then n different; one fold)."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    header = [int(v) for v in lines[0]]
    folds, per_fold = (1, header[0]) if len(header) == 1 else (header[0], header[1])
    body = lines[1:]
    if len(body) != folds * 2 * per_fold:
        raise ValueError(f"{path}: header says {folds} folds x 2 x {per_fold} pairs, found {len(body)} lines")
    pairs = []
    for i, fields in enumerate(body):
        pair = _parse_pair(fields, i // (2 * per_fold), f"{path}:{i + 2}")
        if pair.same != ((i % (2 * per_fold)) < per_fold):
            raise ValueError(f"{path}:{i + 2}: pair type does not match its position in the fold")
        pairs.append(pair)
    return pairs


def pair_images(pairs: Sequence[Pair], lfw_images: str | os.PathLike) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(unique image paths, index of each pair's first image, index of its second image): every
    image once, so it is aligned and embedded once however many pairs use it."""
    a = [lfw_image(lfw_images, p.name1, p.index1) for p in pairs]
    b = [lfw_image(lfw_images, p.name2, p.index2) for p in pairs]
    unique = list(dict.fromkeys(a + b))
    index = {s: i for i, s in enumerate(unique)}
    return unique, np.array([index[s] for s in a], dtype=np.int64), np.array([index[s] for s in b], dtype=np.int64)


def read_lfw_people(path: str | os.PathLike) -> list[list[tuple[str, int]]]:
    """people.txt (10 folds) or peopleDevTrain/DevTest.txt (one set): per fold, (name, image count)."""
    lines = [line.split() for line in Path(path).read_text().splitlines() if line.strip()]
    if len(lines) > 1 and len(lines[1]) == 1:  # people.txt: folds, then per fold a count and its names
        folds, i, out = int(lines[0][0]), 1, []
        for _ in range(folds):
            count = int(lines[i][0])
            out.append([(n, int(c)) for n, c in lines[i + 1:i + 1 + count]])
            i += 1 + count
        return out
    count = int(lines[0][0])
    people = [(n, int(c)) for n, c in lines[1:]]
    if len(people) != count:
        raise ValueError(f"{path}: header says {count} people, found {len(people)}")
    return [people]


# ------------------------------------------------------------------------------------------------
# Degradations (domain shifts)


def degrade(chips: np.ndarray, kind: str) -> np.ndarray:
    """A domain shift applied to chips (N,150,150,3) uint8: 'lowres:N' (down to N px and back up,
    bilinear), 'gray' (luminance replicated to RGB), 'none'."""
    from PIL import Image

    chips = np.asarray(chips)
    if kind == "none":
        return chips.copy()
    if kind == "gray":
        gray = np.round(chips.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        return np.repeat(gray.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if kind.startswith("lowres:"):
        size = int(kind.split(":", 1)[1])
        if not 2 <= size <= 150:
            raise ValueError(f"lowres size must be in 2..150, got {size}")
        out = np.empty_like(chips)
        for i, chip in enumerate(chips):
            small = Image.fromarray(chip).resize((size, size), Image.Resampling.BILINEAR)
            out[i] = np.asarray(small.resize(chip.shape[1::-1], Image.Resampling.BILINEAR))
        return out
    raise ValueError(f"unknown degradation {kind!r}; use 'lowres:N', 'gray' or 'none'")


# ------------------------------------------------------------------------------------------------
# Aligned-chip cache


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


@dataclass
class ChipRecord:
    """One source image in the cache."""

    source: str
    sha256: str
    status: str                      # 'detected', 'detected_cnn' (fallback detector), 'fallback' (centred box), 'skipped'
    reason: str = ""
    box: list[int] = field(default_factory=list)
    landmarks: list[list[int]] = field(default_factory=list)
    faces_found: int = 0


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


@dataclass
class ChipSet:
    """Chips for a list of source images, in order; `ok[i]` is False where image i was skipped."""

    chips: np.ndarray
    ok: np.ndarray
    records: list[ChipRecord]

    @property
    def fallbacks(self) -> list[str]:
        """Images where no detector found a face (aligned in the centred box instead)."""
        return [r.source for r in self.records if r.status == "fallback"]

    @property
    def cnn_rescued(self) -> list[str]:
        """Images the primary detector missed and dlib's CNN detector found."""
        return [r.source for r in self.records if r.status == "detected_cnn"]

    @property
    def skipped(self) -> dict[str, str]:
        """Images that yielded no chip, with the reason."""
        return {r.source: r.reason for r in self.records if r.status == "skipped"}


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

    def chips(self, sources: Sequence[str | os.PathLike], workers: int | None = None,
              progress: bool = True) -> ChipSet:
        """Chips of `sources` (aligned now where not cached), with per-image records."""
        from tqdm import tqdm

        files = [str(s) for s in sources]
        unique = list(dict.fromkeys(files))
        hashes = {s: (file_sha256(s) if os.path.exists(s) else "") for s in unique}
        todo = []
        for source in unique:
            cached = self._records.get(source)
            if (cached and cached["sha256"] == hashes[source] and
                    (cached["status"] == "skipped" or (self.folder / f"{hashes[source]}.npy").exists())):
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
        chips = np.zeros((len(files), self.settings.size, self.settings.size, 3), np.uint8)
        ok = np.zeros(len(files), bool)
        records = []
        for i, source in enumerate(files):
            fields = self._records[source]
            records.append(ChipRecord(**fields))
            if fields["status"] != "skipped":
                chips[i] = np.load(self.folder / f"{fields['sha256']}.npy")
                ok[i] = True
        return ChipSet(chips, ok, records)
