"""128-D face descriptors from dlib's face-recognition ResNet, through pyfacedlib's C++ core."""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from . import models
from ._native import CHIP_SIZE, DESCRIPTOR_SIZE, resolve_device
from ._system import available_cpus
from .align import AlignmentSettings, as_chips, find_faces
from .images import ImageLike, as_rgb

__all__ = ["BACKENDS", "CHIP_SIZE", "CONV_KERNELS", "DESCRIPTOR_SIZE", "Face", "FaceEmbedder", "as_chips", "distance"]


def default_threads() -> int:
    """Default worker threads: the CPUs this process may run on."""
    return available_cpus()


@dataclass(frozen=True)
class Face:
    """One face found in an image."""

    box: np.ndarray          # (4,) int64 left, top, right, bottom
    landmarks: np.ndarray    # (5, 2) int64 x, y
    chip: np.ndarray         # (150, 150, 3) uint8 aligned face
    descriptor: np.ndarray   # (128,) float32
    score: float = field(default=0.0)  # detector confidence


BACKENDS = ("folded", "dlib")
CONV_KERNELS = ("auto", "avx512", "avx2", "blas")


class FaceEmbedder:
    """dlib's face-recognition network (128-D descriptors), batched and multi-threaded.

    model: path of an affine testing-net .dat (dlib_face_recognition_resnet_model_v1 format, e.g. one
    exported by pyfacedlib); None = the shipped model. threads: worker threads (default: all CPUs
    this process may use). backend: "folded" (the default on CPU: batch norm folded into the
    convolutions, direct SIMD convolution kernels or batched GEMMs (see `conv_kernel`), fused ReLU;
    within 1e-5 of dlib) or "dlib" (dlib's own
    forward pass, the reference; the only one on a GPU). device: "cpu", "cuda" (dlib's cuDNN forward
    pass; needs a CUDA build and a GPU, else DeviceError) or "auto" (the default: the GPU when this
    installation has a CUDA module and a GPU is found, else the CPU, with a warning when a CUDA
    module finds no GPU); `self.device` says which ran. Raises ModelFormatError for a file that is
    not such a model.
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None,
                 backend: str | None = None, device: str = "auto") -> None:
        self.model_path = str(model) if model is not None else models.path(models.FACE_RECOGNITION)
        self.device, module = resolve_device(device)
        self._core = module.FaceEmbedderCore(self.model_path, self._check_threads(threads))
        if backend is not None:
            self.backend = backend

    @property
    def backend(self) -> str:
        """The forward pass in use: "folded" or "dlib"."""
        return self._core.backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {value!r}")
        if self.device == "cuda" and value != "dlib":
            raise ValueError("backend='folded' is the CPU forward pass: on device='cuda' only dlib's cuDNN "
                             "forward pass runs (use FaceEmbedder(device='cpu') for the folded one)")
        self._core.backend = value

    @property
    def conv_kernel(self) -> str:
        """The folded backend's convolution kernel: "avx512" or "avx2" (direct SIMD kernels, the
        default where the CPU has them) or "blas" (im2col + OpenBLAS GEMM, any CPU). Set "auto" for
        the fastest this CPU supports; a kernel the CPU cannot run raises ValueError."""
        return self._core.conv_kernel

    @conv_kernel.setter
    def conv_kernel(self, value: str) -> None:
        if value not in CONV_KERNELS:
            raise ValueError(f"conv_kernel must be one of {CONV_KERNELS}, got {value!r}")
        self._core.conv_kernel = value

    @staticmethod
    def _check_threads(threads: int | None) -> int:
        if threads is None:
            return default_threads()
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1:
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        return int(threads)

    @property
    def threads(self) -> int:
        """Worker threads used per batch."""
        return self._core.threads

    @threads.setter
    def threads(self, value: int) -> None:
        self._core.threads = self._check_threads(value)

    def embed_chips(self, chips: np.ndarray, num_jitters: int = 0, seed: int = 0) -> np.ndarray:
        """Descriptors of aligned face chips: (N, 128) float32.

        chips: uint8 RGB (N, 150, 150, 3) or one (150, 150, 3), aligned as dlib.get_face_chip does
        (see pyfacedlib.align.extract_chip). num_jitters: 0 or 1 = no jitter; > 1 = the mean
        descriptor of that many randomly jittered copies (dlib's jitter_image), reproducible with
        `seed` (seed 0 draws the jitters a freshly loaded dlib model draws on its first call).
        """
        batch = as_chips(chips)
        if not isinstance(num_jitters, (int, np.integer)) or num_jitters < 0:
            raise ValueError(f"num_jitters must be an integer >= 0, got {num_jitters!r}")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        if len(batch) == 0:
            return np.zeros((0, DESCRIPTOR_SIZE), np.float32)
        return self._core.embed_chips(batch, int(num_jitters), int(seed))

    def embed_image(self, image: ImageLike, detector: str = "hog", upsample: int = 1, num_jitters: int = 0,
                    seed: int = 0, min_face_size: float | None = None) -> list[Face]:
        """Every face in `image`: detect -> 5-point landmarks -> chip -> descriptor.

        image: a path (EXIF orientation applied), a uint8 RGB array, a PIL.Image, or an OpenCV frame
        through pyfacedlib.from_bgr. min_face_size: smallest face wanted in pixels; large photos are
        scanned on a resized copy (pyfacedlib.align.detection_scale), landmarks and chips always come
        from the full-resolution image. Returns a list of Face (empty when no face is found), in
        the detector's order.
        """
        settings = AlignmentSettings.for_photos(detector=detector, upsample=upsample, min_face_size=min_face_size)
        boxes, scores, points, chips, _ = find_faces(as_rgb(image), settings)
        if len(boxes) == 0:
            return []
        descriptors = self.embed_chips(chips, num_jitters=num_jitters, seed=seed)
        return [Face(box=boxes[i], landmarks=points[i], chip=chips[i], descriptor=descriptors[i],
                     score=float(scores[i])) for i in range(len(boxes))]


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between descriptors (dlib's metric; same person below 0.6)."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
