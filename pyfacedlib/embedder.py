"""128-D face descriptors from dlib's face-recognition ResNet, through pyfacedlib's C++ core."""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from . import models
from ._config import option
from ._native import CHIP_SIZE, DESCRIPTOR_SIZE, DEVICES, core, resolve_device
from ._system import available_cpus
from .align import AlignmentSettings, as_chips, find_faces
from .errors import DeviceError
from .images import ImageLike, as_rgb
from .quality import face_quality

if TYPE_CHECKING:
    from .onnx_model import OnnxSession

__all__ = ["BACKENDS", "CHIP_SIZE", "CONV_KERNELS", "DESCRIPTOR_SIZE", "EmbedderSettings", "Face", "FaceEmbedder",
           "as_chips", "distance"]


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
    quality: float = field(default=float("nan"))  # pyfacedlib.quality: how likely it verifies right, in [0, 1]


BACKENDS = ("folded", "dlib", "onnx")
CONV_KERNELS = ("auto", "avx512", "avx2", "blas")


@dataclass(frozen=True)
class EmbedderSettings:
    """Which forward pass the verbs that embed use (FaceEmbedder's backend and onnx_providers; each
    field's help is also its command-line option's, on every verb that embeds)."""

    backend: str | None = option(None, "forward pass: folded (the CPU default), dlib (dlib's own, the reference) "
                                       "or onnx (the model exported to ONNX, run in onnxruntime)", choices=BACKENDS)
    onnx_providers: str | None = option(None, "backend onnx: onnxruntime execution providers in order, "
                                              "comma-separated (e.g. CUDAExecutionProvider,CPUExecutionProvider); "
                                              "default: CUDA when onnxruntime has it, else CPU")

    def __post_init__(self) -> None:
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.onnx_providers is not None and self.backend != "onnx":
            raise ValueError("onnx providers are for backend 'onnx'")
        if self.onnx_providers is not None and not self.providers():
            raise ValueError("onnx_providers: give at least one provider name")

    def providers(self) -> list[str] | None:
        """onnx_providers as a list (None when not given)."""
        if self.onnx_providers is None:
            return None
        return [p.strip() for p in self.onnx_providers.split(",") if p.strip()]

    def kwargs(self) -> dict[str, Any]:
        """FaceEmbedder's keyword arguments for these settings."""
        options: dict[str, Any] = {"backend": self.backend}
        if self.onnx_providers is not None:
            options["onnx_providers"] = self.providers()
        return options


class FaceEmbedder:
    """dlib's face-recognition network (128-D descriptors), batched and multi-threaded.

    model: path of an affine testing-net .dat (dlib_face_recognition_resnet_model_v1 format, e.g. one
    exported by pyfacedlib); None = the shipped model. threads: worker threads (default: all CPUs
    this process may use). backend: "folded" (the default on CPU: batch norm folded into the
    convolutions, direct SIMD convolution kernels or batched GEMMs (see `conv_kernel`), fused ReLU;
    within 1e-5 of dlib), "dlib" (dlib's own forward pass, the reference; the only one on a GPU of
    a CUDA build) or "onnx" (the model exported to ONNX (pyfacedlib.onnx_model, cached on first use)
    and run in onnxruntime on `onnx_providers`: the GPU path that needs no CUDA build of dlib).
    device: "cpu", "cuda" (dlib's cuDNN forward pass, needing a CUDA build and a GPU; with
    backend="onnx": onnxruntime's CUDA provider) or "auto" (the default: the GPU when there is one,
    else the CPU, with a warning when a CUDA module finds no GPU); `self.device` says which ran.
    onnx_providers (backend="onnx"): onnxruntime execution providers in order of preference, e.g.
    ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]; None = from
    `device`. Raises ModelFormatError for a file that is not such a model, DeviceError for a device
    or provider this installation lacks, ImportError for backend="onnx" without onnxruntime.
    """

    def __init__(self, model: str | os.PathLike | None = None, threads: int | None = None,
                 backend: str | None = None, device: str = "auto",
                 onnx_providers: Sequence[str | tuple[str, dict]] | None = None) -> None:
        self.model_path = str(model) if model is not None else models.path(models.FACE_RECOGNITION)
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if onnx_providers is not None and backend != "onnx":
            raise ValueError("onnx_providers is for backend='onnx'")
        self._core: Any = None
        self._onnx: OnnxSession | None = None
        if backend == "onnx":
            self._onnx_providers = _providers_for(device, onnx_providers)
            self._onnx_may_fall_back = device == "auto" and onnx_providers is None
            self._threads = self._check_threads(threads)
            self._start_onnx()
            return
        self.device, module = resolve_device(device)
        self._core = module.FaceEmbedderCore(self.model_path, self._check_threads(threads))
        if backend is not None:
            self.backend = backend

    @property
    def shipped_model(self) -> bool:
        """Whether this embedder runs dlib's shipped face model (the quality score then also reads
        the descriptors: pyfacedlib.quality)."""
        if not hasattr(self, "_shipped"):
            self._shipped = models.is_model(self.model_path, models.FACE_RECOGNITION)
        return self._shipped

    def face_quality(self, scores: np.ndarray, boxes: np.ndarray, chips: np.ndarray, descriptors: np.ndarray,
                     detector: str = "hog", num_jitters: int = 0) -> np.ndarray:
        """pyfacedlib.quality.face_quality of faces this embedder described: with their descriptors
        when they come from the shipped model without jitter, else the variant without them."""
        plain = self.shipped_model and num_jitters <= 1
        return face_quality(scores, boxes, chips, descriptors if plain else None, detector)

    def _start_onnx(self) -> None:
        from .onnx_model import cached_onnx

        graph = cached_onnx(self.model_path)
        try:
            session = self._onnx_session(graph)
        except (DeviceError, ImportError):
            raise
        except Exception:  # noqa: BLE001 - a damaged cache file: onnxruntime's own error types
            session = self._onnx_session(cached_onnx(self.model_path, refresh=True))
        self._onnx = session
        self.device = self._onnx.device

    def _onnx_session(self, graph: os.PathLike) -> OnnxSession:
        """An onnxruntime session of `graph` on the chosen providers; with device="auto" and no
        providers given, a GPU provider that cannot start falls back to the CPU, with a warning."""
        from .onnx_model import OnnxSession

        try:
            return OnnxSession(graph, self._onnx_providers, threads=self._threads)
        except DeviceError as exc:
            if not self._onnx_may_fall_back or self._onnx_providers == ["CPUExecutionProvider"]:
                raise
            warnings.warn(f"device='auto': {exc}; running on the CPU", RuntimeWarning, stacklevel=4)
            self._onnx_providers = ["CPUExecutionProvider"]
            return OnnxSession(graph, self._onnx_providers, threads=self._threads)

    @property
    def backend(self) -> str:
        """The forward pass in use: "folded", "dlib" or "onnx"."""
        return "onnx" if self._onnx is not None else self._core.backend

    @backend.setter
    def backend(self, value: str) -> None:
        if value not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {value!r}")
        if (value == "onnx") != (self._onnx is not None):
            raise ValueError("backend='onnx' is chosen when the embedder is made: FaceEmbedder(model, backend='onnx') "
                             "(it and the folded/dlib passes do not switch in place)")
        if self._onnx is not None:
            return
        if self.device == "cuda" and value != "dlib":
            raise ValueError("backend='folded' is the CPU forward pass: on device='cuda' only dlib's cuDNN "
                             "forward pass runs (use FaceEmbedder(device='cpu') for the folded one, or "
                             "backend='onnx')")
        self._core.backend = value

    @property
    def onnx_providers(self) -> list[str]:
        """backend="onnx": the execution providers the session runs on, in priority order; else []."""
        return self._onnx.providers if self._onnx is not None else []

    @property
    def conv_kernel(self) -> str | None:
        """The folded backend's convolution kernel: "avx512" or "avx2" (direct SIMD kernels, the
        default where the CPU has them) or "blas" (im2col + OpenBLAS GEMM, any CPU); None with
        backend="onnx". Set "auto" for the fastest this CPU supports; a kernel the CPU cannot run
        raises ValueError."""
        return self._core.conv_kernel if self._core is not None else None

    @conv_kernel.setter
    def conv_kernel(self, value: str) -> None:
        if value not in CONV_KERNELS:
            raise ValueError(f"conv_kernel must be one of {CONV_KERNELS}, got {value!r}")
        if self._core is None:
            raise ValueError("conv_kernel is the folded pass's: backend='onnx' runs onnxruntime's kernels")
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
        return self._threads if self._onnx is not None else self._core.threads

    @threads.setter
    def threads(self, value: int) -> None:
        if self._onnx is not None:
            self._threads = self._check_threads(value)
            self._start_onnx()
        else:
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
        if self._onnx is None:
            return self._core.embed_chips(batch, int(num_jitters), int(seed))
        if num_jitters <= 1:
            return self._onnx.run(batch)
        crops = core.FaceEmbedderCore.jitter_chips(batch, int(num_jitters), int(seed))
        return self._onnx.run(crops).reshape(len(batch), int(num_jitters), DESCRIPTOR_SIZE).mean(axis=1)

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
        boxes, scores, points, chips, detector = find_faces(as_rgb(image), settings)
        if len(boxes) == 0:
            return []
        descriptors = self.embed_chips(chips, num_jitters=num_jitters, seed=seed)
        quality = self.face_quality(scores, boxes, chips, descriptors, detector, num_jitters)
        return [Face(box=boxes[i], landmarks=points[i], chip=chips[i], descriptor=descriptors[i],
                     score=float(scores[i]), quality=float(quality[i])) for i in range(len(boxes))]


def _providers_for(device: str, providers: Sequence[str | tuple[str, dict]] | None
                   ) -> list[str | tuple[str, dict]]:
    """onnxruntime providers for backend="onnx": `providers` as given, else from `device` ("cuda":
    CUDA then CPU; "cpu": CPU; "auto": CUDA when onnxruntime has it, else CPU)."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if providers is not None:
        return list(providers)
    if device == "cpu":
        return ["CPUExecutionProvider"]
    from .onnx_model import available_providers

    if device == "cuda" or "CUDAExecutionProvider" in available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance between descriptors (dlib's metric; same person below 0.6)."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
