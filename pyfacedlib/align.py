"""Alignment, the one module: face detection, 5-point landmarks and aligned face chips, exactly as
dlib computes them, and the settings that say how (AlignmentSettings).

    boxes = detect(image)                     # (N, 4) int64: left, top, right, bottom
    points = landmarks(image, boxes[0])       # (5, 2) int64: x, y
    chip = extract_chip(image, points)        # (150, 150, 3) uint8, == dlib.get_face_chip
    faces = find_faces(image, AlignmentSettings.for_photos())   # all of it, every face of a photo

Everything that turns images into chips goes through here: the photo pipeline (pyfacedlib.photos),
the chip cache (pyfacedlib.chipcache, a cache over `align_one`), galleries, archives, the CLI.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from . import models
from ._config import option
from ._native import CHIP_SIZE, DESCRIPTOR_SIZE, core
from ._system import available_cpus
from .images import DEFAULT_MAX_IMAGE_PIXELS, ImageLike, as_rgb

__all__ = ["CENTER_BOX", "CHIP_SIZE", "DESCRIPTOR_SIZE", "DETECTORS", "FALLBACKS", "PHOTO_FALLBACKS", "AlignedFace",
           "AlignmentSettings", "FoundFaces", "align_one", "as_chips", "detect", "detect_faces", "detection_scale",
           "extract_chip", "find_faces", "landmarks", "nearest_to_center"]

DETECTORS = ("hog", "cnn")
# When the detector finds no face: 'cnn+center' (try dlib's CNN detector, then landmarks in a
# centred box), 'cnn', 'center', or 'none' (no face).
FALLBACKS = ("cnn+center", "cnn", "center", "none")
PHOTO_FALLBACKS = ("none", "cnn")  # photos: never a centred box (AlignmentSettings.for_photos)
# Where a centred face sits when no detector finds it: the median HOG box on LFW deep-funneled
# (250x250: left 67, top 80, right 175, bottom 187), relative to the image size. Only for
# one-face-per-image datasets: a photo may simply have no face, so photos never guess one.
CENTER_BOX = (0.268, 0.32, 0.70, 0.748)

# dlib's detectors find faces down to about this many pixels across at the scale they scan (the
# HOG detector's 80x80 window; the CNN detector is used with the same figure); each upsample
# (a 2x pyramid_up before scanning) halves it.
DETECTOR_MIN_FACE = 80
# Default smallest face on a large photo, as a fraction of its shorter side (see detection_scale).
AUTO_MIN_FACE_FRACTION = 1 / 20


class _DetectorPool:
    """Detectors shared by all threads: a dlib detector object serialises its callers, so each caller
    takes an idle one (or makes one) and gives it back. Threads that come and go (thread pools, Ray
    Data's actor threads) reuse the detectors instead of loading a new one each (~0.3 s for HOG)."""

    def __init__(self, make: Callable[[], Any]) -> None:
        self._make = make
        self._idle: list = []
        self._lock = threading.Lock()

    @contextmanager
    def take(self) -> Iterator[Any]:
        with self._lock:
            detector = self._idle.pop() if self._idle else None
        if detector is None:
            detector = self._make()
        try:
            yield detector
        finally:
            with self._lock:
                self._idle.append(detector)


_hog_pool = _DetectorPool(lambda: core.HogFaceDetector())
_cnn_pools: dict[str, _DetectorPool] = {}
_cnn_pools_lock = threading.Lock()


def _detector_pool(detector: str, model: str | None) -> _DetectorPool:
    if detector == "hog":
        return _hog_pool
    if detector != "cnn":
        raise ValueError(f"detector must be one of {DETECTORS}, got {detector!r}")
    path = model or models.path(models.CNN_DETECTOR)
    with _cnn_pools_lock:
        if path not in _cnn_pools:
            _cnn_pools[path] = _DetectorPool(lambda: core.CnnFaceDetector(path))
        return _cnn_pools[path]


@lru_cache(maxsize=4)
def _landmark_predictor(model_path: str):
    return core.LandmarkPredictor(model_path)


def _check_upsample(upsample: int) -> int:
    if isinstance(upsample, bool) or not isinstance(upsample, (int, np.integer)) or not 0 <= upsample <= 8:
        raise ValueError(f"upsample must be an integer in 0..8, got {upsample!r}")
    return int(upsample)


def detection_scale(image_shape: Sequence[int], upsample: int = 1, min_face_size: float | None = None) -> float:
    """The factor an image is resized by before the detector scans it.

    dlib scans the image upsampled `upsample` times (factor 2**upsample), which finds faces down to
    80 / 2**upsample pixels. On large photos that costs seconds (a 4000x3000 photo at upsample 1 is
    scanned at 8000x6000), mostly spent looking for faces far smaller than anyone wants. The scan
    is therefore done at the factor that makes `min_face_size` (pixels, in the original image) the
    detector's smallest face: 80 / min_face_size, never above dlib's own 2**upsample. Default
    min_face_size: the larger of dlib's own smallest face (80 / 2**upsample) and a twentieth of the
    shorter side, so images up to 800 px on the shorter side (LFW, webcam frames) are scanned
    exactly as dlib does, and a 12-MP photo for faces >= 150 px. Pass min_face_size=0 for dlib's
    own scan at any size.
    """
    native = float(2 ** upsample)
    if min_face_size is None:
        min_face_size = max(DETECTOR_MIN_FACE / native, min(image_shape[0], image_shape[1]) * AUTO_MIN_FACE_FRACTION)
    if isinstance(min_face_size, bool) or not isinstance(min_face_size, (int, float, np.integer, np.floating)) \
            or not min_face_size >= 0:
        raise ValueError(f"min_face_size must be a number of pixels >= 0 or None, got {min_face_size!r}")
    if min_face_size == 0:
        return native
    return min(native, DETECTOR_MIN_FACE / float(min_face_size))


_resize_pools: dict[tuple[int, int], Any] = {}
_resize_pools_lock = threading.Lock()


def _resize_pool(threads: int):
    """The one process-wide pool the banded resize runs in: `threads` (the CPUs) threads in total, however
    many photo-pipeline threads resize at once (N decode threads x their own pools would start N x CPUs)."""
    from concurrent.futures import ThreadPoolExecutor

    key = (os.getpid(), threads)  # a forked child has the parent's pool object but none of its threads
    with _resize_pools_lock:
        pool = _resize_pools.get(key)
        if pool is None:
            pool = _resize_pools[key] = ThreadPoolExecutor(threads, thread_name_prefix="pyfacedlib-resize")
        return pool


def _resized(rgb: np.ndarray, scale: float) -> np.ndarray:
    """rgb resized by `scale` (Pillow's antialiased bilinear), in horizontal bands on all CPUs.

    Each band is resized from its exact box of the source (Pillow's `box`), so the bands join into
    exactly the image one resize call gives; Pillow releases the GIL while it resamples. The bands
    run in one shared pool of as many threads as CPUs, so concurrent callers (the photo pipeline's
    threads) never run more resize threads than CPUs in total.
    """
    from PIL import Image

    height, width = rgb.shape[:2]
    out_w, out_h = max(1, round(width * scale)), max(1, round(height * scale))
    image = Image.fromarray(rgb)
    cpus = available_cpus()
    bands = max(1, min(cpus, out_h // 256))
    bounds = [round(out_h * i / bands) for i in range(bands + 1)]

    def band(i: int) -> np.ndarray:
        top, bottom = bounds[i], bounds[i + 1]
        box = (0.0, top * height / out_h, float(width), bottom * height / out_h)
        return np.asarray(image.resize((out_w, bottom - top), Image.Resampling.BILINEAR, box=box))

    if bands == 1:
        return band(0)
    return np.concatenate(list(_resize_pool(cpus).map(band, range(bands))))


def detect(image: ImageLike, detector: str = "hog", upsample: int = 1, return_scores: bool = False,
           model: str | None = None, min_face_size: float | None = None):
    """Face boxes in `image`, as dlib's detectors give them.

    detector: "hog" (dlib.get_frontal_face_detector) or "cnn" (mmod_human_face_detector, or the
    `model` file given). upsample: how many times the image is doubled first (finds smaller faces).
    min_face_size: the smallest face wanted, in pixels; large photos are scanned on a resized
    copy chosen from it (see detection_scale; None = the default rule, 0 = always dlib's own scan).
    Images up to 800 px on the shorter side are scanned exactly as dlib does by default.
    Returns an (N, 4) int64 array [left, top, right, bottom] in the image's own coordinates; with
    return_scores, also (N,) scores.
    """
    rgb = as_rgb(image)
    upsample = _check_upsample(upsample)
    pool = _detector_pool(detector, model)
    scale = detection_scale(rgb.shape, upsample, min_face_size)
    if scale == 2 ** upsample:
        with pool.take() as scanner:
            boxes, scores = scanner.detect(rgb, upsample)  # dlib's own path
    else:
        small = _resized(rgb, scale)
        with pool.take() as scanner:
            boxes, scores = scanner.detect(small, 0)
        factors = np.array([rgb.shape[1] / small.shape[1], rgb.shape[0] / small.shape[0]] * 2)
        boxes = np.round(boxes * factors).astype(np.int64)
    return (boxes, scores) if return_scores else boxes


def _box(box: Sequence[int] | np.ndarray) -> tuple[int, int, int, int]:
    values = np.asarray(box)
    if values.shape != (4,) or not np.issubdtype(values.dtype, np.number):
        raise ValueError(f"expected a box [left, top, right, bottom], got {box!r}")
    left, top, right, bottom = (int(round(float(v))) for v in values)
    if right < left or bottom < top:
        raise ValueError(f"box {box!r} has right < left or bottom < top")
    return left, top, right, bottom


def landmarks(image: ImageLike, box: Sequence[int] | np.ndarray, model: str | None = None) -> np.ndarray:
    """Face landmarks in `box` of `image`: (5, 2) int64 x, y with dlib's 5-point predictor
    (or (K, 2) for the shape predictor file given as `model`)."""
    rgb = as_rgb(image)
    predictor = _landmark_predictor(model or models.path(models.LANDMARKS_5))
    return predictor.predict(rgb, *_box(box))


def extract_chip(image: ImageLike, landmarks: np.ndarray, size: int = 150, padding: float = 0.25) -> np.ndarray:
    """The aligned face chip (size, size, 3) uint8, pixel for pixel dlib.get_face_chip's result.

    landmarks: (5, 2) or (68, 2) points from `landmarks()`. padding: the border around the face,
    as a fraction of its size (dlib's default 0.25, which the recognition model expects).
    """
    rgb = as_rgb(image)
    points = np.asarray(landmarks)
    if points.ndim != 2 or points.shape[1] != 2 or points.shape[0] not in (5, 68):
        raise ValueError(f"expected (5, 2) or (68, 2) landmarks, got shape {points.shape}")
    if not (isinstance(size, (int, np.integer)) and 0 < size <= 4096):
        raise ValueError(f"size must be an integer in 1..4096, got {size!r}")
    if not padding >= 0:
        raise ValueError(f"padding must be >= 0, got {padding!r}")
    return core.extract_face_chip(rgb, np.round(points).astype(np.int64), int(size), float(padding))


def as_chips(chips: np.ndarray) -> np.ndarray:
    """Validates face chips: (N, 150, 150, 3) or one (150, 150, 3) uint8 RGB -> contiguous (N, 150, 150, 3)."""
    if not isinstance(chips, np.ndarray):
        raise TypeError(f"expected face chips as a numpy uint8 array, got {type(chips).__name__}")
    if chips.dtype != np.uint8:
        raise TypeError(f"expected uint8 face chips, got dtype {chips.dtype}")
    if chips.shape == (CHIP_SIZE, CHIP_SIZE, 3):
        chips = chips[None]
    if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
        raise ValueError(
            f"expected face chips shaped (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) or ({CHIP_SIZE}, {CHIP_SIZE}, 3) (aligned "
            f"as dlib.get_face_chip does), got {chips.shape}")
    return np.ascontiguousarray(chips)


def nearest_to_center(boxes: np.ndarray, image_shape: tuple[int, ...]) -> int:
    """Index of the box whose centre is nearest the image centre (for one-face-per-image datasets)."""
    if len(boxes) == 0:
        raise ValueError("no boxes")
    centers = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0], axis=1)
    middle = np.array([image_shape[1] / 2.0, image_shape[0] / 2.0])
    return int(np.argmin(((centers - middle) ** 2).sum(axis=1)))


@dataclass(frozen=True)
class AlignmentSettings:
    """How faces are found and chips made; a chip cache or a face table is reused only when these match.

    The defaults are for one-face-per-image datasets (training sets, LFW): when nothing is found the
    CNN detector is tried, then a centred box. For photo collections use `AlignmentSettings.for_photos()`:
    a photo may have no face, so no box is ever guessed.
    """

    detector: str = option("hog", "face detector: dlib's HOG (fast) or its CNN (MMOD; slow on a CPU)",
                            choices=DETECTORS)
    upsample: int = option(1, "times the image is doubled before detection (finds smaller faces)")
    size: int = option(CHIP_SIZE, "chip side in pixels (the face model takes 150)", cli=False)
    padding: float = option(0.25, "border around the face, as a fraction of its size (dlib's 0.25)", cli=False)
    fallback: str = option("cnn+center", "when the detector finds no face: dlib's CNN detector and/or a centred "
                            "box ('none': no face)", choices=FALLBACKS)
    min_face_size: float | None = option(
        None, "smallest face wanted, in pixels: large photos are scanned on a resized copy (default: dlib's own "
        "scan up to 800 px on the shorter side, else 1/20 of it; 0: always dlib's)")
    exif_orientation: bool = option(True, "turn photos upright as their EXIF orientation tag says",
                                     flag="--no-exif")
    version: int = option(2, "bumped when the alignment code changes", cli=False)
    max_image_pixels: int = option(
        DEFAULT_MAX_IMAGE_PIXELS, "largest photo decoded, in pixels (width x height; default: Pillow's 89.5 MP "
        "warning level): a larger one is listed as unreadable, never an out-of-memory process; 0: no limit")

    def __post_init__(self) -> None:
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        _check_upsample(self.upsample)
        if isinstance(self.max_image_pixels, bool) or not isinstance(self.max_image_pixels, (int, np.integer)) \
                or self.max_image_pixels < 0:
            raise ValueError(f"max_image_pixels must be a number of pixels >= 0 (0: no limit), "
                             f"got {self.max_image_pixels!r}")

    @classmethod
    def for_photos(cls, **options: Any) -> AlignmentSettings:
        """Settings for photo collections and video (galleries, identify, search, exports, archives):
        `fallback` defaults to 'none' and may be 'cnn', never a centred box (a photo may have no face)."""
        fallback = options.setdefault("fallback", PHOTO_FALLBACKS[0])
        if fallback not in PHOTO_FALLBACKS:
            raise ValueError(f"photos take fallback 'none' or 'cnn' (a centred box would invent a face), "
                             f"got {fallback!r}")
        return cls(**options)

    def key(self) -> str:
        """Short hash naming the cache folder of these settings."""
        fields = asdict(self)
        fields.pop("max_image_pixels")  # which photos are refused, not how faces are aligned
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


class FoundFaces(NamedTuple):
    """Every face of one image: boxes (N, 4) int64 [left, top, right, bottom], detector scores (N,),
    landmarks (N, 5, 2) int64, chips (N, size, size, 3) uint8, and which detector found them."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    chips: np.ndarray
    detector: str


class AlignedFace(NamedTuple):
    """The one face of a one-face-per-image dataset image (the chip cache's unit): its chip, box,
    landmarks, how it was found ('detected', 'detected_cnn' or 'fallback': the centred box) and how
    many faces the detector saw."""

    chip: np.ndarray
    box: np.ndarray
    landmarks: np.ndarray
    status: str
    faces_found: int


def detect_faces(image: ImageLike, settings: AlignmentSettings) -> tuple[np.ndarray, np.ndarray, str]:
    """Detection with the settings' fallback detector, the one place it is decided: (boxes, scores,
    detector). When `settings.detector` finds none and the fallback starts with 'cnn', dlib's CNN
    detector scans the image too."""
    rgb = as_rgb(image)
    boxes, scores = detect(rgb, detector=settings.detector, upsample=settings.upsample, return_scores=True,
                           min_face_size=settings.min_face_size)
    detector = settings.detector
    if not len(boxes) and settings.fallback.startswith("cnn") and settings.detector != "cnn":
        boxes, scores = detect(rgb, detector="cnn", upsample=settings.upsample, return_scores=True,
                               min_face_size=settings.min_face_size)
        detector = "cnn"
    return np.asarray(boxes, np.int64).reshape(-1, 4), np.asarray(scores, np.float64), detector


def align_boxes(image: ImageLike, boxes: np.ndarray, settings: AlignmentSettings,
                model: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The landmarks (N, 5, 2) int64 and chips (N, size, size, 3) uint8 of every box, in one call
    into the C++ core (landmarks() then extract_chip() for each box)."""
    rgb = as_rgb(image)
    if not 0 < settings.size <= 4096:
        raise ValueError(f"size must be an integer in 1..4096, got {settings.size!r}")
    if not settings.padding >= 0:
        raise ValueError(f"padding must be >= 0, got {settings.padding!r}")
    predictor = _landmark_predictor(model or models.path(models.LANDMARKS_5))
    return predictor.align(rgb, np.ascontiguousarray(boxes, np.int64).reshape(-1, 4), int(settings.size),
                           float(settings.padding))


def find_faces(image: ImageLike, settings: AlignmentSettings) -> FoundFaces:
    """Every face of an image as the settings say: detection (with the fallback detector) and then
    landmarks and chips of all faces in one call. A centred box is never guessed here (a photo may
    simply have no face; see align_one for one-face-per-image datasets)."""
    rgb = as_rgb(image)
    boxes, scores, detector = detect_faces(rgb, settings)
    points, chips = align_boxes(rgb, boxes, settings)
    return FoundFaces(boxes, scores, points, chips, detector)


def align_one(image: ImageLike, settings: AlignmentSettings) -> AlignedFace | None:
    """The one face of a one-face-per-image dataset image (training sets, LFW): the detected box
    nearest the image centre, else (fallback ending in 'center') a centred box; None when there is
    none."""
    rgb = as_rgb(image)
    boxes, _, detector = detect_faces(rgb, settings)
    status = "detected" if detector == settings.detector else "detected_cnn"
    if len(boxes):
        box = boxes[nearest_to_center(boxes, rgb.shape)]
    elif settings.fallback.endswith("center"):
        h, w = rgb.shape[:2]
        box = np.array([round(CENTER_BOX[0] * w), round(CENTER_BOX[1] * h),
                        round(CENTER_BOX[2] * w), round(CENTER_BOX[3] * h)], np.int64)
        status = "fallback"
    else:
        return None
    points, chips = align_boxes(rgb, box[None], settings)
    return AlignedFace(chips[0], box, points[0], status, int(len(boxes)))
