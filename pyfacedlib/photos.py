"""Every face in every photo: the one detect -> landmarks -> chip -> descriptor path for photo
collections and video (galleries, identification, search, exports).

Alignment itself is pyfacedlib.align's (find_faces); the chip cache (pyfacedlib.chipcache) keeps one
face per image for training sets, this module keeps all of them. Decoding, detection, landmarks and
chips run in a pool of threads (the C++ core releases the GIL, each thread has its own detector), the
descriptors are computed in batches by one FaceEmbedder using every core. Unreadable inputs become
results with an `error`, never exceptions.
"""
from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from . import _faults
from ._native import CHIP_SIZE, DESCRIPTOR_SIZE
from ._system import available_cpus, file_sha256
from .align import AlignmentSettings, find_faces
from .errors import ImageError, error_kind
from .images import ImageLike, as_rgb, load_image

if TYPE_CHECKING:
    from .embedder import FaceEmbedder

__all__ = ["CHIP_SIZE", "VIDEO_SUFFIXES", "PhotoFaces", "detect_photo", "embed_photos", "embed_video", "find_faces",
           "is_video", "ordered_map", "video_frames", "with_descriptors"]
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv")

PhotoInput = str | os.PathLike | ImageLike
VideoSource = str | os.PathLike | int  # a video file, or a camera index


@dataclass
class PhotoFaces:
    """The faces found in one photo (or video frame), in the detector's order.

    error: why the photo could not be read ("" when it was); then there are no faces.
    frame/timestamp: position in a video (None for photos); timestamp in seconds.
    """

    source: str
    sha256: str = ""
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))      # left, top, right, bottom
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float64))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2), np.int64))
    descriptors: np.ndarray = field(default_factory=lambda: np.zeros((0, DESCRIPTOR_SIZE), np.float32))
    quality: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # pyfacedlib.quality, with
                                         # the descriptors (NaN where it cannot be computed)
    chips: np.ndarray | None = None      # (n, 150, 150, 3) uint8 while descriptors are pending, or when kept
    detector: str = ""                   # which detector found the faces ("hog" or "cnn")
    error: str = ""
    error_kind: str | None = None        # why, as a kind: "unreadable", "transient", "detection_failed"
                                         # (errors.error_kind)
    frame: int | None = None
    timestamp: float | None = None
    image_shape: tuple[int, ...] = ()

    def __len__(self) -> int:
        return len(self.boxes)

    @property
    def areas(self) -> np.ndarray:
        """Box areas in pixels."""
        return ((self.boxes[:, 2] - self.boxes[:, 0]).astype(np.float64) *
                (self.boxes[:, 3] - self.boxes[:, 1]).astype(np.float64))


def detect_photo(item: PhotoInput, settings: AlignmentSettings, hash_files: bool,
                frame: int | None = None, timestamp: float | None = None) -> PhotoFaces:
    """Reads (a path) or takes (an array / PIL image) one image and finds its faces."""
    result = PhotoFaces(str(item) if isinstance(item, (str, os.PathLike)) else "<image>", frame=frame,
                        timestamp=timestamp)
    try:
        if isinstance(item, (str, os.PathLike)):
            if hash_files:
                result.sha256 = file_sha256(item)
            rgb = load_image(item, exif_orientation=settings.exif_orientation, max_pixels=settings.max_image_pixels)
        else:
            rgb = as_rgb(item)
    except (ImageError, OSError, TypeError) as exc:
        result.error = str(exc) or type(exc).__name__
        result.error_kind = error_kind(exc)
        return result
    result.image_shape = rgb.shape
    try:
        result.boxes, result.scores, result.landmarks, result.chips, result.detector = find_faces(rgb, settings)
    except (RuntimeError, ValueError, MemoryError) as exc:  # one odd photo must not stop a collection
        result.error = f"face detection failed: {type(exc).__name__}: {exc}"
        result.error_kind = error_kind(exc, detecting=True)
    return result


def ordered_map(items: Iterable, work, workers: int) -> Iterator:
    """work(item) for every item on `workers` threads, yielded in input order, with at most
    4 x workers items in flight (so an endless stream or a million files never piles up)."""
    if workers <= 1:
        for item in items:
            yield work(item)
        return
    window: deque[Future] = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="pyfacedlib-detect") as pool:
        for item in items:
            window.append(pool.submit(work, item))
            if len(window) >= 4 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def add_descriptors(pending: list[PhotoFaces], embedder: FaceEmbedder, keep_chips: bool = False,
                    num_jitters: int = 0, seed: int = 0) -> None:
    """Computes the descriptors of the photos' chips in one batch (dropping the chips unless kept);
    num_jitters/seed as FaceEmbedder.embed_chips."""
    chips = [p.chips for p in pending if p.chips is not None and len(p.chips)]
    if chips:
        descriptors = embedder.embed_chips(np.concatenate(chips), num_jitters=num_jitters, seed=seed)
        row = 0
        for p in pending:
            if p.chips is not None and len(p.chips):
                p.descriptors = descriptors[row:row + len(p.chips)]
                p.quality = embedder.face_quality(p.scores, p.boxes, p.chips, p.descriptors, p.detector, num_jitters)
                row += len(p.chips)
    if not keep_chips:
        for p in pending:
            p.chips = None


def _handed_out(results: list[PhotoFaces | None]) -> Iterator[PhotoFaces | None]:
    """Yields the results one by one; after each is taken, fault point "photo" (pyfacedlib._faults)."""
    for result in results:
        yield result
        _faults.point("photo")


def with_descriptors(results: Iterable[PhotoFaces | None], embedder: FaceEmbedder, keep_chips: bool = False,
                     batch_faces: int = 64, max_pending: int = 256, bar=None, num_jitters: int = 0,
                     seed: int = 0) -> Iterator[PhotoFaces | None]:
    """Adds descriptors to detected results, embedding about `batch_faces` faces (or `max_pending`
    results) at a time, and yields them in order; None items (inputs skipped upstream) pass through."""
    pending: list[PhotoFaces | None] = []
    pending_faces = 0
    for result in results:
        pending.append(result)
        pending_faces += len(result) if result is not None else 0
        if pending_faces >= batch_faces or len(pending) >= max_pending:
            add_descriptors([p for p in pending if p is not None], embedder, keep_chips, num_jitters, seed)
            yield from _handed_out(pending)
            if bar is not None:
                bar.update(len(pending))
            pending, pending_faces = [], 0
    add_descriptors([p for p in pending if p is not None], embedder, keep_chips, num_jitters, seed)
    yield from _handed_out(pending)
    if bar is not None:
        bar.update(len(pending))


def progress_bar(progress: bool | str, default: str, unit: str, total: int | None = None):
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=progress if isinstance(progress, str) else default,
                disable=not progress)


def embed_photos(photos: Iterable[PhotoInput], embedder: FaceEmbedder, settings: AlignmentSettings,
                 workers: int | None = None, keep_chips: bool = False, batch_faces: int = 64,
                 hash_files: bool = True, progress: bool | str = False, num_jitters: int = 0,
                 seed: int = 0) -> Iterator[PhotoFaces]:
    """Every face of every photo, with descriptors, in input order.

    photos: paths, numpy images or PIL images (any iterable; a generator is consumed lazily).
    workers: detection threads (default: the CPUs this process may use). Descriptors are computed
    by `embedder` in batches of about `batch_faces` faces. hash_files: compute each file's sha256
    (galleries and exports key files by it). progress: a tqdm bar (a string sets its label).
    num_jitters/seed: as FaceEmbedder.embed_chips (the jitters of a batch are drawn together).
    Unreadable photos come back with `error` set and no faces.
    """
    total = len(photos) if isinstance(photos, Sequence) else None
    with progress_bar(progress, "faces", "img", total) as bar:
        detected = ordered_map(photos, lambda item: detect_photo(item, settings, hash_files),
                                   workers or available_cpus())
        yield from cast(Iterator[PhotoFaces], with_descriptors(detected, embedder, keep_chips, batch_faces, 256, bar,
                                                               num_jitters, seed))


def is_video(source: object) -> bool:
    """True for a camera index (int, or a string of digits) or a path with a video file suffix."""
    if isinstance(source, (int, np.integer)) and not isinstance(source, bool):
        return True
    if isinstance(source, str) and source.isdigit():
        return True
    return isinstance(source, (str, os.PathLike)) and Path(source).suffix.lower() in VIDEO_SUFFIXES


def video_frames(source: VideoSource, every: int = 1, max_frames: int | None = None
                 ) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame number, timestamp in seconds, RGB frame) for every `every`-th frame of a video file or
    camera (an index such as 0), through OpenCV. Raises ImageError when the source cannot be opened,
    and, after the last frame it could read, when a video file ends before the frame count its
    container declares (truncated or corrupt: "ended at frame N of M"; a count off by one frame, as
    containers that estimate it from duration x fps may be, is not reported). Cameras and files
    without a frame count end quietly."""
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ImageError("reading video needs OpenCV: pip install opencv-python-headless") from exc
    if not isinstance(every, (int, np.integer)) or every < 1:
        raise ValueError(f"every must be an integer >= 1, got {every!r}")
    if isinstance(source, (int, np.integer)) or (isinstance(source, str) and source.isdigit()):
        capture = cv2.VideoCapture(int(source))
        if not capture.isOpened():
            raise ImageError(f"cannot open camera {source} (OpenCV could not read it)")
    else:
        if not Path(source).is_file():
            raise ImageError(f"video file not found: {source}")
        capture = cv2.VideoCapture(os.fspath(source))
        if not capture.isOpened():
            raise ImageError(f"cannot open video {source} (OpenCV could not read it)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    camera = isinstance(source, (int, np.integer)) or (isinstance(source, str) and source.isdigit())
    declared = 0 if camera else int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
    try:
        index = emitted = 0
        ended = False
        while max_frames is None or emitted < max_frames:
            if index % every:
                if not capture.grab():
                    ended = True
                    break
            else:
                ok, frame = capture.read()
                if not ok:
                    ended = True
                    break
                milliseconds = capture.get(cv2.CAP_PROP_POS_MSEC)
                timestamp = index / fps if fps > 0 else milliseconds / 1000.0
                yield index, float(timestamp), cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                emitted += 1
            index += 1
    finally:
        capture.release()
    if ended and index == 0 and not camera:
        raise ImageError(f"video {source} has no frames (empty, or not a video OpenCV can decode)")
    if ended and declared > 0 and index < declared - 1:
        raise ImageError(f"video {source} ended at frame {index} of {declared} (truncated or corrupt): "
                         f"the frames before were read")


def embed_video(source: VideoSource, embedder: FaceEmbedder, settings: AlignmentSettings,
                every: int = 1, max_frames: int | None = None, workers: int | None = None,
                progress: bool | str = False) -> Iterator[PhotoFaces]:
    """embed_photos over the frames of a video or camera: one PhotoFaces per processed frame, with
    `frame` and `timestamp` set (frames are detected on several threads, in order). A video that
    ends before its declared frame count raises video_frames' ImageError after every frame read was
    yielded (none in flight is lost)."""
    name = str(source)
    ended_early: list[ImageError] = []

    def frames() -> Iterator[tuple[int, float, np.ndarray]]:
        try:
            yield from video_frames(source, every=every, max_frames=max_frames)
        except ImageError as exc:  # cannot open (no frame read yet), or ended early: raised once all are done
            ended_early.append(exc)

    def work(item: tuple[int, float, np.ndarray]) -> PhotoFaces:
        index, timestamp, rgb = item
        result = detect_photo(rgb, settings, False, frame=index, timestamp=timestamp)
        result.source = name
        return result

    with progress_bar(progress, "frames", "frame") as bar:
        detected = ordered_map(frames(), work, workers or available_cpus())
        # small batches: a camera's matches should not wait for many frames
        yield from cast(Iterator[PhotoFaces], with_descriptors(detected, embedder, False, 16, 8, bar))
    if ended_early:
        raise ended_early[0]
