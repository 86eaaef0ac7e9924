"""Known people: enrol a gallery from photos, identify the faces in new photos and video (with an
"unknown" answer), search the collection for a face.

    g = pfd.Gallery.build("known/")           # known/Name/*.jpg, or known/Name.jpg (one photo per person)
    g.save("people.parquet")
    for m in g.identify("party.jpg"):
        print(m.identity, m.distance, m.confidence, m.box)
    hits = g.search("someone.jpg", k=10)

Enrolment rule: every face of every enrolment photo is kept in the table; a photo's face is
*enrolled* (used for its person) when it is the photo's only face, or when it is clearly the largest
(area >= GalleryConfig.largest_ratio x the next; configurable, or multiple_faces="skip") — and its
quality score (pyfacedlib.quality) is at least GalleryConfig.min_quality, unless every face of that
person is below it (then the best one is enrolled). Photos without an enrolled face are listed in
`gallery.skipped` with the reason.

Threshold: a gallery with at least two identities calibrates its own. For each enrolled face it takes
the distance to the nearest face of *another* identity: how close an unknown person gets when the
rest of the gallery is searched for them. The threshold is that distribution's `target_fpir`
quantile (default 1 %: about 1 in 100 unknown faces that resemble the enrolled ones is wrongly named),
kept within [threshold_floor, threshold_ceiling] so tiny galleries stay sane; with one identity
it is dlib's 0.6. `confidence` of a match at distance d is the fraction of those impostor distances
above d: 1 - the false-positive rate of a threshold placed at d (NaN when the gallery has fewer than
two identities).
"""
from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from . import models
from ._config import option
from ._system import file_sha256
from .align import AlignmentSettings
from .datasets.identities import labelled_files
from .embedder import EmbedderSettings
from .errors import GalleryError, ImageError, NoFaceFoundError
from .evaluate import DLIB_THRESHOLD
from .facetable import FaceTable, TableChanges, update_table
from .images import ImageLike
from .index import KINDS, DescriptorIndex
from .photos import PhotoFaces, VideoSource, embed_photos, embed_video, is_video

if TYPE_CHECKING:
    from .embedder import FaceEmbedder

UNKNOWN = "unknown"
CLASSIFIERS = ("nearest", "knn", "svm")
MULTIPLE_FACES = ("largest", "skip")
# enrolment's min_quality (GalleryConfig), chosen on peopleDevTrain faces (benchmarks/quality_lfw.py): 0.4-1 % of
# faces score below 0.25, and comparisons with them go wrong ~10x as often (docs/galleries-and-identify.md)
DEFAULT_MIN_QUALITY = 0.25


@dataclass(frozen=True)
class GalleryConfig:
    """How a gallery enrols faces and decides who is who (saved with the gallery)."""

    multiple_faces: str = option("largest", "enrolment photos with several faces: enrol the clearly largest "
                                            "(see largest_ratio), or skip them", choices=MULTIPLE_FACES)
    largest_ratio: float = option(2.0, "'clearly the largest': its area is at least this many times the next "
                                       "largest face's")
    target_fpir: float = option(0.01, "calibrated threshold: the fraction of unknown faces (resembling the "
                                      "enrolled ones) wrongly named")
    threshold_floor: float = option(0.4, "the calibrated threshold never goes below this distance")
    threshold_ceiling: float = option(0.6, "the calibrated threshold never goes above this distance")
    classifier: str = option("nearest", "who a face is: the nearest identity, a k-NN vote or a linear SVM (the "
                                        "threshold still answers 'unknown')", choices=CLASSIFIERS)
    knn_neighbors: int | None = option(None, "knn: the nearest faces that vote, those within the threshold "
                                             "(default: round(sqrt(enrolled faces)))")
    index: str = option("auto", "search index over the enrolled faces (pyfacedlib.index; auto: exact up to a "
                                "million faces, HNSW above)", choices=KINDS)
    min_quality: float = option(DEFAULT_MIN_QUALITY, "enrolment skips faces whose quality score "
                                "(pyfacedlib.quality, 0..1) is below this, listing them, but never a person's "
                                "only face (0: enrol every face)")

    def __post_init__(self) -> None:
        if self.multiple_faces not in MULTIPLE_FACES:
            raise ValueError(f"multiple_faces must be one of {MULTIPLE_FACES}, got {self.multiple_faces!r}")
        if not self.largest_ratio >= 1:
            raise ValueError(f"largest_ratio must be >= 1, got {self.largest_ratio!r}")
        if not 0 < self.target_fpir < 1:
            raise ValueError(f"target_fpir must be in (0, 1), got {self.target_fpir!r}")
        if not 0 < self.threshold_floor <= self.threshold_ceiling:
            raise ValueError("need 0 < threshold_floor <= threshold_ceiling, got "
                             f"{self.threshold_floor!r} and {self.threshold_ceiling!r}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {self.classifier!r}")
        if self.knn_neighbors is not None and self.knn_neighbors < 1:
            raise ValueError(f"knn_neighbors must be >= 1 or None, got {self.knn_neighbors!r}")
        if self.index not in KINDS:
            raise ValueError(f"index must be one of {KINDS}, got {self.index!r}")
        if isinstance(self.min_quality, bool) or not isinstance(self.min_quality, (int, float)) \
                or not 0 <= self.min_quality <= 1:
            raise ValueError(f"min_quality must be in [0, 1], got {self.min_quality!r}")


@dataclass
class Calibration:
    """How the gallery's threshold was chosen, and the evidence.

    source: "calibrated" (from the gallery's own impostor distances), "fallback" (fewer than two
    identities: dlib's 0.6) or "user" (set by hand). estimated_fpir: fraction of the gallery's
    nearest-impostor distances below the threshold. estimated_tpir: fraction of enrolled faces (of
    people with several) whose nearest same-person face is within it."""

    threshold: float
    source: str
    target_fpir: float
    impostor_samples: int = 0
    estimated_fpir: float = float("nan")
    genuine_samples: int = 0
    estimated_tpir: float = float("nan")
    impostor_distances: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    def confidence(self, distance: np.ndarray | float) -> np.ndarray:
        """1 - the fraction of impostor distances below `distance` (NaN without calibration data)."""
        d = np.asarray(distance, np.float64)
        if not len(self.impostor_distances):
            return np.full(d.shape, np.nan)
        below = np.searchsorted(self.impostor_distances, d, side="right")
        return 1.0 - below / len(self.impostor_distances)

    def summary(self) -> dict:
        """Plain data (without the distances)."""
        data = asdict(self)
        data.pop("impostor_distances")
        return data

    def to_dict(self) -> dict:
        """Plain data with the evidence (the impostor distances as a list): what a saved gallery stores."""
        return {**self.summary(), "impostor_distances": self.impostor_distances.tolist()}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """The calibration to_dict() wrote; KeyError/TypeError/ValueError when `data` is not one."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["threshold"], values["source"] = float(data["threshold"]), str(data["source"])
        values["impostor_distances"] = np.asarray(data["impostor_distances"], np.float64).reshape(-1)
        return cls(**values)


@dataclass
class Match:
    """One face found in an image, and who it is.

    identity: the person, or "unknown" when even the nearest is farther than the threshold.
    distance: to the nearest enrolled face of `identity` (of the nearest person when unknown).
    confidence: see the module docstring. box: (left, top, right, bottom) in the image.
    candidates: the k nearest people, (identity, distance) ascending. frame/timestamp: in a video.
    quality: the face's quality score in [0, 1] (pyfacedlib.quality; NaN for bare descriptors).
    """

    identity: str
    distance: float
    confidence: float
    box: tuple[int, int, int, int]
    candidates: list[tuple[str, float]]
    face: int = 0
    landmarks: np.ndarray | None = field(default=None, repr=False)
    source: str = ""
    frame: int | None = None
    timestamp: float | None = None
    quality: float = float("nan")


@dataclass
class SearchHit:
    """A face of the gallery near the query: where it is, whose it is, how near."""

    source: str
    face: int
    box: tuple[int, int, int, int]
    distance: float
    identity: str = ""
    sha256: str = ""


@dataclass
class SyncReport(TableChanges):
    """What gallery.sync() (or build) changed, and the new or changed photos without an enrolled face."""

    skipped: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """One line."""
        return f"{super().summary()}, {len(self.skipped)} without an enrolled face"


@dataclass
class IdentifyResult:
    """The matches of one photo or video frame; `error` when it could not be read."""

    source: str
    matches: list[Match]
    frame: int | None = None
    timestamp: float | None = None
    error: str = ""


def enrolment_photos(root: str | os.PathLike) -> dict[str, str]:
    """Photo path -> identity under `root`, by datasets.labelled_files' rule (the one every folder
    reader uses): root/Name/**/*.jpg is Name's, root/Name.jpg is Name's (face_recognition's
    convention). Hidden entries are ignored. NotADirectoryError when root is not a folder."""
    folder = Path(root)
    if not folder.is_dir():
        raise NotADirectoryError(f"enrolment folder not found: {folder}")
    return {path: str(person) for path, person in labelled_files(folder, labelled=True).items()}


# Gallery files of this format store what load() restores instead of recomputing: the calibration
# with its evidence, the enrolled rows (the table's `enrolled` column, counted in the metadata) and
# the model's sha256 with the size and mtime the model file had when it was last hashed.
GALLERY_FORMAT = 2


def _file_stamp(path: str) -> dict:
    """The model file's identity short of reading it: absolute path, size and mtime (ns)."""
    stat = os.stat(path)
    return {"path": os.path.abspath(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _hash_model(path: str) -> tuple[str, dict]:
    """(sha256, stamp) of a model file; the stamp is taken first, so a later change shows in it."""
    stamp = _file_stamp(path)
    return file_sha256(path), stamp


def _restorable(meta: dict, table: FaceTable) -> bool:
    """Whether a gallery file's metadata holds a calibration and enrolment consistent with its rows
    (written by save() in GALLERY_FORMAT or later, and not edited since)."""
    if not isinstance(meta.get("gallery_format"), int) or meta["gallery_format"] < GALLERY_FORMAT:
        return False
    enrolment, calibration = meta.get("enrolment"), meta.get("calibration")
    if not isinstance(enrolment, dict) or not isinstance(calibration, dict) or "impostor_distances" not in calibration:
        return False
    enrolled = table.enrolled
    named = np.array([bool(name) for name in table.identity], bool) if len(table) else np.zeros(0, bool)
    return (enrolment.get("faces") == int(enrolled.sum()) and enrolment.get("rows") == len(table)
            and bool(np.all(table.has_face[enrolled] & named[enrolled])))


def _box_tuple(box: np.ndarray) -> tuple[int, int, int, int]:
    left, top, right, bottom = (int(v) for v in box)
    return left, top, right, bottom


class Gallery:
    """Enrolled faces of known people, their descriptors and how they were made (see module doc)."""

    def __init__(self, table: FaceTable, settings: AlignmentSettings, model_path: str,
                 config: GalleryConfig | None = None, root: str | None = None, threads: int | None = None,
                 enrolled: np.ndarray | None = None) -> None:
        """enrolled: the enrolled rows as stored (a gallery file); None applies the enrolment rule."""
        self.table = table
        self.settings = settings
        self.model_path = model_path
        self.model_id = table.model_id
        self.config = config or GalleryConfig()
        self.root = root
        self.threads = threads
        self._embedder: FaceEmbedder | None = None
        # the forward pass this gallery's embedder runs (backend, onnx providers); set before first use
        self.embedder_settings = EmbedderSettings()
        self.last_sync: SyncReport | None = None   # what the last sync (or build) changed
        self.source_file: str | None = None         # the gallery file it was loaded from
        self._user_threshold: float | None = None
        # a model file known to hash to model_id while it has this size and mtime (see _is_our_model)
        self._model_stamp: dict | None = None
        self._reset(enrolled)

    # ------------------------------------------------------------------ building and storing
    @classmethod
    def build(cls, root: str | os.PathLike, model: str | os.PathLike | None = None,
              config: GalleryConfig | None = None, threads: int | None = None, progress: bool = True,
              embedder: EmbedderSettings | None = None, **alignment) -> Gallery:
        """Enrols every photo under `root` (identity folders or a flat folder named by file stem).

        model: affine .dat (None: the shipped model). embedder: the forward pass (EmbedderSettings: backend,
        onnx providers; default the folded CPU pass), kept as `embedder_settings`. alignment:
        AlignmentSettings fields (detector, upsample, min_face_size, exif_orientation, fallback='cnn' to try
        dlib's CNN detector on photos where HOG finds nothing; default 'none')."""
        settings = AlignmentSettings.for_photos(**alignment)
        if settings.fallback.endswith("center"):
            raise ValueError("a gallery never guesses a centred face: fallback must be 'cnn' or 'none'")
        model_path = str(model) if model is not None else models.path(models.FACE_RECOGNITION)
        if not Path(model_path).is_file():
            raise GalleryError(f"model file not found: {model_path}")
        if not enrolment_photos(root):
            raise ValueError(f"no photos under {root}: expected {root}/Name/*.jpg (identity folders) or "
                             f"{root}/Name.jpg (one photo per person)")
        model_id, stamp = _hash_model(model_path)
        table = FaceTable(model_id=model_id, settings_hash=settings.key())
        gallery = cls(table, settings, model_path, config, str(Path(root)), threads)
        gallery._model_stamp = stamp
        gallery.embedder_settings = embedder or EmbedderSettings()
        gallery.sync(progress=progress)
        return gallery

    @classmethod
    def from_descriptors(cls, descriptors: np.ndarray, identities: Sequence[str], sources: Sequence[str] | None = None,
                         model: str | os.PathLike | None = None, config: GalleryConfig | None = None,
                         settings: AlignmentSettings | None = None, threads: int | None = None) -> Gallery:
        """A gallery from descriptors already computed (one enrolled face per row), e.g. from aligned
        chips. model / settings: what made them (None: the shipped model / the default alignment),
        used when images are identified against it."""
        vectors = np.asarray(descriptors, np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != 128:
            raise ValueError(f"expected (N, 128) descriptors, got shape {vectors.shape}")
        names = [str(v) for v in identities]
        if len(names) != len(vectors) or not all(names):
            raise ValueError(f"need one non-empty identity per descriptor: {len(vectors)} descriptors, "
                             f"{len(names)} identities")
        paths = [str(v) for v in sources] if sources is not None else [f"<descriptor {i}>" for i in range(len(names))]
        model_path = str(model) if model is not None else models.path(models.FACE_RECOGNITION)
        settings = settings or AlignmentSettings.for_photos()
        n = len(vectors)
        model_id, stamp = _hash_model(model_path)
        table = FaceTable(paths, [""] * n, np.zeros(n, np.int32), np.zeros((n, 4), np.int64), np.full(n, np.nan),
                          np.zeros((n, 5, 2), np.int64), vectors, [""] * n, names, np.ones(n, bool),
                          model_id, settings.key())
        gallery = cls(table, settings, model_path, config, None, threads)
        gallery._model_stamp = stamp
        return gallery

    def save(self, path: str | os.PathLike) -> None:
        """Writes the gallery to one Parquet file (pyfacedlib.facetable schema), atomically.

        Besides the faces (the `enrolled` column says which are enrolled) it stores what load()
        restores without recomputing: the calibration and its evidence, the enrolment count, and
        the model's sha256 with its file's size and mtime when they are known to match (a model
        file this gallery has not checked yet is hashed here once)."""
        model: dict = {"sha256": self.model_id, "path": self.model_path}
        if self.model_path and Path(self.model_path).is_file():
            try:
                if self._is_our_model(self.model_path) and self._model_stamp is not None:
                    model.update(size=self._model_stamp["size"], mtime_ns=self._model_stamp["mtime_ns"])
            except OSError:  # unreadable now: the next load hashes it (or says it is missing)
                pass
        self.table.metadata = {
            "kind": "gallery", "gallery_format": GALLERY_FORMAT, "root": self.root, "model_path": self.model_path,
            "model": model, "settings": asdict(self.settings), "config": asdict(self.config),
            "user_threshold": self._user_threshold, "calibration": self.calibration.to_dict(),
            "enrolment": {"faces": int(self.table.enrolled.sum()), "rows": len(self.table)},
        }
        self.table.write_parquet(path)

    @classmethod
    def load(cls, path: str | os.PathLike, model: str | os.PathLike | None = None,
             threads: int | None = None, embedder: EmbedderSettings | None = None) -> Gallery:
        """Reads a gallery written by save() (or any face table with alignment settings, such as an
        export or an archive: pyfacedlib.Gallery.from_parquet). model: the model file, when it is no
        longer where the gallery was made; it must be the same model (same sha256).

        A gallery saved by this version comes back as it was saved: its enrolled faces, threshold
        and calibration evidence are restored, not recomputed, and its model file is trusted while
        it keeps the size and mtime recorded with its sha256 (otherwise it is hashed once, and
        another sha256 is a GalleryError naming both files). Older gallery files and other face
        tables are enrolled and calibrated as when built. embedder: the forward pass for the photos
        identified against it (EmbedderSettings; default the folded CPU pass)."""
        table = FaceTable.read_parquet(path)
        meta = table.metadata
        if "settings" not in meta:
            raise GalleryError(f"{path} holds faces without their alignment settings: not a pyfacedlib table")
        settings = AlignmentSettings(**meta["settings"])
        if table.settings_hash and settings.key() != table.settings_hash:
            raise GalleryError(f"{path}: its rows were made with other alignment settings than its metadata says")
        known = {f.name for f in fields(GalleryConfig)}
        config = GalleryConfig(**{k: v for k, v in meta.get("config", {}).items() if k in known})
        calibration = None
        if _restorable(meta, table):
            try:
                calibration = Calibration.from_dict(meta["calibration"])
            except (KeyError, TypeError, ValueError):
                calibration = None
        gallery = cls(table, settings, meta.get("model_path", ""), config, meta.get("root"), threads,
                      enrolled=table.enrolled.copy() if calibration is not None else None)
        gallery.source_file = str(path)
        gallery.embedder_settings = embedder or EmbedderSettings()
        stored = meta.get("model")
        if (isinstance(stored, dict) and stored.get("sha256") == table.model_id and gallery.model_path
                and isinstance(stored.get("size"), int) and isinstance(stored.get("mtime_ns"), int)):
            gallery._model_stamp = {"path": os.path.abspath(gallery.model_path), "size": stored["size"],
                                    "mtime_ns": stored["mtime_ns"]}
        if model is not None:
            gallery._check_model(str(model))
            gallery.model_path = str(model)
        if meta.get("user_threshold") is not None:
            gallery.threshold = float(meta["user_threshold"])
        if calibration is not None:
            gallery._calibration = calibration  # as saved (with the user's threshold, when one was set)
        return gallery

    from_parquet = load

    def _is_our_model(self, path: str) -> bool:
        """Whether the file `path` holds the model the descriptors were made with: trusted without
        reading while it has the size and mtime it had when it last hashed to model_id, else hashed."""
        if not self.model_id:
            return True
        if _file_stamp(path) == self._model_stamp:
            return True
        sha, stamp = _hash_model(path)
        if sha != self.model_id:
            return False
        self._model_stamp = stamp
        return True

    def _not_our_model(self, path: str) -> GalleryError:
        made = f"the gallery {self.source_file}" if self.source_file else "this gallery"
        return GalleryError(
            f"{path} is not the model {made} was made with (its sha256 is not {self.model_id[:12]}…): "
            "descriptors of different models cannot be compared; rebuild the gallery with this model, or pass "
            "the original model file with model=PATH")

    def _check_model(self, path: str) -> None:
        if not Path(path).is_file():
            raise GalleryError(f"model file not found: {path}")
        if not self._is_our_model(path):
            raise self._not_our_model(path)

    @property
    def embedder(self) -> FaceEmbedder:
        """The FaceEmbedder of the gallery's model (loaded on first use; the file is checked against
        the gallery's sha256, see load())."""
        if self._embedder is None:
            from .embedder import FaceEmbedder

            candidates = [self.model_path] if self.model_path else []
            try:
                candidates.append(models.path(models.FACE_RECOGNITION))
            except Exception:  # noqa: BLE001 - the shipped model may be absent; then only model_path counts
                pass
            changed: str | None = None  # the gallery's model file, when it now holds another model
            for path in candidates:
                if not Path(path).is_file():
                    continue
                if self._is_our_model(path):
                    self.model_path = path
                    self._embedder = FaceEmbedder(path, threads=self.threads, **self.embedder_settings.kwargs())
                    break
                if path == self.model_path:
                    changed = path
            else:
                if changed is not None:
                    raise self._not_our_model(changed)
                raise GalleryError(f"the model this gallery was made with (sha256 {self.model_id[:12]}…, was at "
                                   f"{self.model_path or '?'}) is not available: load it with model=PATH")
        return self._embedder

    # ------------------------------------------------------------------ enrolment
    def sync(self, progress: bool = True, workers: int | None = None) -> SyncReport:
        """Brings the gallery up to date with its enrolment folder: embeds added and changed photos
        (files whose bytes were already embedded elsewhere are reused), drops removed ones."""
        if not self.root:
            raise GalleryError("this gallery has no enrolment folder to sync (it was not built from one)")
        listing = enrolment_photos(self.root)
        self.table, changes = update_table(self.table, listing, self.embedder, self.settings, workers,
                                           "enrolling" if progress else False)
        report = SyncReport(**asdict(changes))
        self._reset()
        touched = set(report.added) | set(report.changed)
        report.skipped = {s: r for s, r in self.skipped.items() if s in touched}
        self.last_sync = report
        return report

    def _reset(self, enrolled: np.ndarray | None = None) -> None:
        """Re-applies the enrolment rule (or takes `enrolled`, the rows a gallery file stored) and
        drops what depends on the enrolled faces."""
        self.table.enrolled = self._enrolled_rows() if enrolled is None else np.asarray(enrolled, bool)
        rows = np.flatnonzero(self.table.enrolled)
        names = np.asarray([self.table.identity[i] for i in rows])
        self._enrolled = rows
        self.identities, self._codes = np.unique(names, return_inverse=True) if len(names) else (np.zeros(0, str),
                                                                                                 np.zeros(0, np.int64))
        self._calibration: Calibration | None = None
        self._index: DescriptorIndex | None = None
        self._search_index: DescriptorIndex | None = None
        self._classifiers: dict[str, object] = {}

    def _enrolled_rows(self) -> np.ndarray:
        t = self.table
        enrolled = np.zeros(len(t), bool)
        if not len(t):
            return enrolled
        areas = ((t.box[:, 2] - t.box[:, 0]) * (t.box[:, 3] - t.box[:, 1])).astype(np.float64)
        start = 0
        while start < len(t):
            end = start
            while end < len(t) and t.source_path[end] == t.source_path[start]:
                end += 1
            faces = [i for i in range(start, end) if t.face[i] >= 0 and t.identity[i]]
            if len(faces) == 1:
                enrolled[faces[0]] = True
            elif len(faces) > 1 and self.config.multiple_faces == "largest":
                by_area = sorted(faces, key=lambda i: -areas[i])
                if areas[by_area[0]] >= self.config.largest_ratio * areas[by_area[1]]:
                    enrolled[by_area[0]] = True
            start = end
        return enrolled & ~self._below_min_quality(enrolled)

    def _below_min_quality(self, enrolled: np.ndarray) -> np.ndarray:
        """The enrolled rows the min_quality rule drops: quality below it (NaN: not computed, kept),
        except that a person whose every enrolled face is below it keeps the best of them."""
        t = self.table
        quality = np.asarray(t.quality, np.float64)  # never None once a FaceTable is made
        low = enrolled & (np.nan_to_num(quality, nan=1.0) < self.config.min_quality)
        rows = np.flatnonzero(enrolled)
        if not low.any():
            return low
        _, person = np.unique(np.array([t.identity[i] for i in rows], dtype=str), return_inverse=True)
        kept = np.bincount(person, weights=(~low[rows]).astype(np.float64))
        # a person with no face at or above min_quality keeps their best one (first by quality, per person)
        order = np.lexsort((-quality[rows], person))
        first = order[np.r_[True, person[order][1:] != person[order][:-1]]]
        low[rows[first[kept[person[first]] == 0]]] = False
        return low

    @property
    def skipped(self) -> dict[str, str]:
        """Enrolment photos without an enrolled face -> why (unreadable, no face, several faces)."""
        t = self.table
        counts: dict[str, int] = {}
        low: dict[str, float] = {}
        reasons: dict[str, str] = {}
        quality = np.asarray(t.quality, np.float64)
        enrolled_sources = {t.source_path[i] for i in self._enrolled}
        for i, source in enumerate(t.source_path):
            if source in enrolled_sources or not t.identity[i]:
                continue
            if t.error[i]:
                reasons[source] = f"unreadable: {t.error[i]}"
            elif t.face[i] < 0:
                reasons[source] = "no face found"
            else:
                counts[source] = counts.get(source, 0) + 1
                if quality[i] < self.config.min_quality:
                    low[source] = float(quality[i])
        rule = ("none clearly the largest" if self.config.multiple_faces == "largest"
                else "photos with several faces are skipped (multiple_faces='skip')")
        for source, n in counts.items():
            reasons[source] = (f"face quality {low[source]:.2f} below min_quality {self.config.min_quality:g}"
                               if n == 1 and source in low else f"{n} faces, {rule}")
        return reasons

    def __len__(self) -> int:
        return len(self._enrolled)

    @property
    def descriptors(self) -> np.ndarray:
        """(N, 128) descriptors of the enrolled faces."""
        return self.table.embedding[self._enrolled]

    @property
    def labels(self) -> np.ndarray:
        """(N,) identity of each enrolled face."""
        return self.identities[self._codes]

    def summary(self) -> str:
        """A few lines: people, faces, photos skipped, threshold."""
        c = self.calibration
        return (f"{len(self.identities)} people, {len(self)} enrolled faces from {len(set(self.table.source_path))} "
                f"photos ({len(self.skipped)} skipped); threshold {c.threshold:.3f} ({c.source}"
                + (f", estimated FPIR {c.estimated_fpir:.3f}, TPIR {c.estimated_tpir:.3f}" if c.source == "calibrated"
                   else "") + ")")

    # ------------------------------------------------------------------ threshold
    @property
    def calibration(self) -> Calibration:
        """The threshold and its evidence (calibrated on first use)."""
        if self._calibration is None:
            self._calibration = self._calibrate()
        return self._calibration

    @property
    def threshold(self) -> float:
        """Distance above which a face is "unknown": set by hand, else calibrated, else 0.6."""
        return self.calibration.threshold

    @threshold.setter
    def threshold(self, value: float | None) -> None:
        if value is not None and not (isinstance(value, (int, float)) and 0 < value < 4):
            raise ValueError(f"threshold must be a distance in (0, 4) or None, got {value!r}")
        self._user_threshold = None if value is None else float(value)
        self._calibration = None

    def _calibrate(self, max_faces: int = 5_000) -> Calibration:
        config = self.config
        impostor, genuine = self._nearest_distances(max_faces)
        if len(self.identities) < 2 or not len(impostor):
            calibration = Calibration(DLIB_THRESHOLD, "fallback", config.target_fpir)
        else:
            raw = float(np.quantile(impostor, config.target_fpir))
            threshold = float(np.clip(raw, config.threshold_floor, config.threshold_ceiling))
            calibration = Calibration(threshold, "calibrated", config.target_fpir, len(impostor),
                                      float(np.mean(impostor <= threshold)), len(genuine),
                                      float(np.mean(genuine <= threshold)) if len(genuine) else float("nan"),
                                      impostor)
        if self._user_threshold is not None:
            calibration.threshold = self._user_threshold
            calibration.source = "user"
            if len(calibration.impostor_distances):
                calibration.estimated_fpir = float(np.mean(calibration.impostor_distances <= self._user_threshold))
        return calibration

    def _nearest_distances(self, max_faces: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted nearest-other-identity distances and nearest-same-identity distances of (up to
        `max_faces` sampled) enrolled faces."""
        n = len(self)
        if n < 2 or len(self.identities) < 2:
            return np.zeros(0), np.zeros(0)
        rows = np.arange(n) if n <= max_faces else np.sort(np.random.default_rng(0).choice(n, max_faces, False))
        k = min(n, 64)
        distances, found = self.index.search(self.descriptors[rows], k)
        same = self._codes[np.where(found >= 0, found, 0)] == self._codes[rows][:, None]
        not_self = found != rows[:, None]
        impostor = np.where(~same & (found >= 0), distances, np.inf).min(axis=1)
        genuine = np.where(same & not_self & (found >= 0), distances, np.inf).min(axis=1)
        # a face whose 64 nearest are all its own person: its nearest impostor is at least the 64th
        impostor = np.where(np.isfinite(impostor), impostor, distances[:, -1])
        counts = np.bincount(self._codes, minlength=len(self.identities))
        has_pair = counts[self._codes[rows]] >= 2
        return np.sort(impostor), np.sort(genuine[has_pair & np.isfinite(genuine)])

    # ------------------------------------------------------------------ identification
    @property
    def index(self) -> DescriptorIndex:
        """Search index over the enrolled faces."""
        if self._index is None:
            self._index = DescriptorIndex(self.descriptors, self.config.index)
        return self._index

    def _classifier(self, kind: str):
        if kind not in self._classifiers:
            if len(self.identities) < 2:
                raise GalleryError(f"classifier {kind!r} needs at least two identities in the gallery")
            from sklearn.pipeline import make_pipeline
            from sklearn.preprocessing import StandardScaler
            from sklearn.svm import LinearSVC

            # facenet's classifier.py uses a linear SVM; LinearSVC (one-vs-rest) scales to many people
            model = make_pipeline(StandardScaler(), LinearSVC(C=1.0, max_iter=20_000))
            model.fit(self.descriptors, self._codes)
            self._classifiers[kind] = model
        return self._classifiers[kind]

    def match_descriptors(self, descriptors: np.ndarray, threshold: float | None = None, k: int = 5,
                          classifier: str | None = None) -> list[Match]:
        """Who each descriptor (N, 128) is: one Match per row (boxes empty)."""
        threshold = self.threshold if threshold is None else float(threshold)
        classifier = classifier or self.config.classifier
        if classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
        if not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        queries = np.asarray(descriptors, np.float32).reshape(-1, 128)
        if len(self) == 0:
            return [Match(UNKNOWN, float("inf"), float("nan"), (0, 0, 0, 0), []) for _ in queries]
        per_identity = self._identity_distances(queries, k)
        votes = None
        if classifier == "knn":
            neighbours = self.config.knn_neighbors or max(1, int(round(np.sqrt(len(self)))))
            d, found = self.index.search(queries, min(neighbours, len(self)))
            votes = np.zeros((len(queries), len(self.identities)))
            for q in range(len(queries)):
                ok = (found[q] >= 0) & (d[q] <= threshold)  # only faces near enough to be the person vote
                np.add.at(votes[q], self._codes[found[q][ok]], 1.0 / np.maximum(d[q][ok], 1e-6))
        elif classifier == "svm":
            predicted = self._classifier("svm").predict(queries)
        matches = []
        for q in range(len(queries)):
            nearest = per_identity[q]
            ranked = sorted(nearest.items(), key=lambda item: item[1])
            if classifier == "nearest":
                code = ranked[0][0]
            elif classifier == "knn":
                # no neighbour within the threshold: the nearest person (then rejected as unknown)
                code = int(np.argmax(votes[q])) if votes[q].any() else ranked[0][0]  # type: ignore[index]
            else:
                code = int(predicted[q])
            distance = nearest.get(code)
            if distance is None:  # the voted identity is not among the fetched candidates
                distance = float(np.linalg.norm(self.descriptors[self._codes == code] - queries[q], axis=1).min())
            name = str(self.identities[code]) if distance <= threshold else UNKNOWN
            if name == UNKNOWN:
                distance = ranked[0][1]
            matches.append(Match(name, float(distance), float(self.calibration.confidence(distance)), (0, 0, 0, 0),
                                 [(str(self.identities[c]), float(v)) for c, v in ranked[:k]]))
        return matches

    def _identity_distances(self, queries: np.ndarray, k: int) -> list[dict[int, float]]:
        """Per query, the nearest distance to each of (at least) the k nearest identities."""
        faces_per_identity = int(np.max(np.bincount(self._codes)))
        fetch = min(len(self), max(k * faces_per_identity, k + 32))
        distances, found = self.index.search(queries, fetch)
        result = []
        for q in range(len(queries)):
            nearest: dict[int, float] = {}
            for d, i in zip(distances[q], found[q]):
                if i >= 0:
                    code = int(self._codes[i])
                    if code not in nearest:
                        nearest[code] = float(d)
            result.append(nearest)
        return result

    def _photo_matches(self, photo: PhotoFaces, threshold: float | None, k: int, classifier: str | None) -> list[Match]:
        matches = self.match_descriptors(photo.descriptors, threshold, k, classifier) if len(photo) else []
        for i, m in enumerate(matches):
            m.box, m.face, m.landmarks = _box_tuple(photo.boxes[i]), i, photo.landmarks[i]
            m.source, m.frame, m.timestamp = photo.source, photo.frame, photo.timestamp
            if len(photo.quality) == len(matches):
                m.quality = float(photo.quality[i])
        return matches

    def identify(self, image: ImageLike | str | os.PathLike | int, threshold: float | None = None, k: int = 5,
                 classifier: str | None = None, every: int = 1) -> list[Match]:
        """Who is in `image`: one Match per face found (an empty list when none is).

        image: a path, numpy RGB array, PIL image, OpenCV frame via pyfacedlib.from_bgr — or a video
        file / camera index, then every `every`-th frame is searched and each match carries its
        frame and timestamp (a camera runs until it stops: use identify_stream to consume it live).
        threshold: None = the gallery's. k: candidates listed per face. classifier: "nearest"
        (default), "knn" or "svm" (the distance rule still answers "unknown"). Raises ImageError for
        an unreadable image."""
        if is_video(image):
            return [m for result in self.identify_stream(cast(VideoSource, image), threshold, k, classifier, every)
                    for m in result.matches]
        photo = next(embed_photos([cast(ImageLike, image)], self.embedder, self.settings, workers=1,
                                  hash_files=False))
        if photo.error:
            raise ImageError(photo.error)
        return self._photo_matches(photo, threshold, k, classifier)

    def identify_many(self, inputs: Sequence[str | os.PathLike | ImageLike], threshold: float | None = None,
                      k: int = 5, classifier: str | None = None, every: int = 1, workers: int | None = None,
                      progress: bool = False, max_frames: int | None = None) -> Iterator[IdentifyResult]:
        """identify over many photos (detected on all cores) and videos, in order: one IdentifyResult per
        photo or processed frame; unreadable inputs have `error` set instead of raising."""
        photos: list = []

        def flush() -> Iterator[IdentifyResult]:
            for photo in embed_photos(photos, self.embedder, self.settings, workers=workers, hash_files=False,
                                      progress="identifying" if progress else False):
                yield IdentifyResult(photo.source, [] if photo.error else self._photo_matches(photo, threshold, k,
                                                                                             classifier),
                                     error=photo.error)
            photos.clear()

        for item in inputs:
            if is_video(item):
                yield from flush()
                try:
                    yield from self.identify_stream(cast(VideoSource, item), threshold, k, classifier, every, workers,
                                                    max_frames, progress)
                except ImageError as exc:
                    yield IdentifyResult(str(item), [], error=str(exc))
            else:
                photos.append(item)
        yield from flush()

    def identify_stream(self, source: VideoSource, threshold: float | None = None, k: int = 5,
                        classifier: str | None = None, every: int = 1, workers: int | None = None,
                        max_frames: int | None = None, progress: bool = False) -> Iterator[IdentifyResult]:
        """Matches frame by frame from a video file or camera index (every `every`-th frame), as they come."""
        for photo in embed_video(source, self.embedder, self.settings, every=every, max_frames=max_frames,
                                 workers=workers, progress="video" if progress else False):
            yield IdentifyResult(photo.source, self._photo_matches(photo, threshold, k, classifier),
                                 photo.frame, photo.timestamp)

    # ------------------------------------------------------------------ search
    def use_search_index(self, index: DescriptorIndex) -> None:
        """Searches with a saved index (pyfacedlib index) of this gallery's faces instead of building
        one. Raises GalleryError when it indexes other faces."""
        faces = self.table.embedding[self.table.has_face]
        if len(index) != len(faces) or not np.array_equal(index.descriptors, faces):
            raise GalleryError(f"the index holds {len(index)} faces that are not this gallery's {len(faces)}: "
                               "rebuild it with pyfacedlib index")
        self._search_index = index

    def search(self, query: ImageLike | str | os.PathLike | np.ndarray, k: int = 10,
               max_distance: float | None = None) -> list[SearchHit]:
        """The k faces of the gallery nearest to `query` (every face of every photo, enrolled or not),
        nearest first, within max_distance when given.

        query: a (128,) descriptor, or an image/path whose largest face is searched for (raises
        NoFaceFoundError when it has none)."""
        if isinstance(query, np.ndarray) and query.shape == (128,) and query.dtype.kind == "f":
            descriptor = query.astype(np.float32)
        else:
            photo = next(embed_photos([query], self.embedder, self.settings, workers=1, hash_files=False))
            if photo.error:
                raise ImageError(photo.error)
            if not len(photo):
                raise NoFaceFoundError(f"no face found in the query {photo.source}")
            descriptor = photo.descriptors[int(np.argmax(photo.areas))]
        rows = np.flatnonzero(self.table.has_face)
        if self._search_index is None:  # every face enrolled: the identification index serves
            self._search_index = (self.index if np.array_equal(rows, self._enrolled) else
                                  DescriptorIndex(self.table.embedding[rows], self.config.index))
        distances, found = self._search_index.search(descriptor, min(k, max(len(rows), 1)))
        hits = []
        for d, i in zip(distances[0], found[0]):
            if i < 0 or (max_distance is not None and d > max_distance):
                continue
            row = int(rows[i])
            t = self.table
            hits.append(SearchHit(t.source_path[row], int(t.face[row]), _box_tuple(t.box[row]), float(d),
                                  t.identity[row] or "", t.sha256[row] or ""))
        return hits
