"""pyfacedlib: fine-tunable dlib face recognition, driven from Python.

    import pyfacedlib as pfd
    emb = pfd.FaceEmbedder()
    faces = emb.embed_image("photo.jpg")          # detect -> landmarks -> chip -> 128-D descriptor
    d = emb.embed_chips(chips)                     # (N,150,150,3) uint8 aligned chips -> (N,128)
"""
from __future__ import annotations

from . import align, archive, chipcache, datasets, evaluate, models, quality
from ._finetune import FinetuneConfig, FinetuneResult, finetune, parse_strategy
from ._native import core as _core
from .align import AlignmentSettings
from .bench import evaluate_folders
from .chipcache import ChipCache, load_faces
from .clustering import ClusterSettings, cluster
from .convert import ConversionReport, convert_affine_to_bn, convert_bn_to_affine
from .embedder import EmbedderSettings, Face, FaceEmbedder, distance
from .errors import (
    CheckpointError,
    DeviceError,
    GalleryError,
    ImageError,
    ModelFormatError,
    ModelNotFoundError,
    NoFaceFoundError,
)
from .faces import FaceSet
from .facetable import FaceTable
from .gallery import Gallery, GalleryConfig, Match, SearchHit
from .images import as_rgb, from_bgr, load_image
from .onnx_model import convert_to_onnx

__version__ = "0.1.0"


def build_info() -> dict:
    """What this installation was built with and what it finds now.

    dlib_version, blas, blas_core, simd, compiler flags (the CPU module); cuda: True when a CUDA
    module is installed and loads; cuda_version, cudnn_version, cuda_driver (the newest CUDA the
    driver supports, "" without a driver), cuda_devices (["NVIDIA H100 80GB HBM3 (sm 9.0, 79.1 GiB)", ...]),
    cuda_detail (how it was built, or why there is no CUDA), and default_device: what
    FaceEmbedder(device="auto") runs on here; onnx_providers: onnxruntime's execution providers here
    (FaceEmbedder(backend="onnx"); [] without onnxruntime).
    """
    from ._native import cuda_status

    info = dict(_core.build_info())
    info.pop("cuda_detail", None)
    cuda = cuda_status()
    info["cuda"] = cuda["built"]
    info["cuda_version"] = cuda.get("runtime_version", "")
    info["cudnn_version"] = cuda.get("cudnn_version", "")
    info["cuda_driver"] = cuda.get("driver_version", "")
    info["cuda_devices"] = [f"{d['name']} (sm {d['compute_capability']}, {d['memory_bytes'] / 2**30:.1f} GiB)"
                            for d in cuda["devices"]]
    if cuda["built"]:
        info["cuda_detail"] = cuda["detail"] + ("" if cuda["devices"] else f"; no GPU: {cuda['device_error']}")
    else:
        info["cuda_detail"] = cuda["error"]
    info["default_device"] = "cuda" if cuda["devices"] else "cpu"
    from .onnx_model import available_providers

    info["onnx_providers"] = available_providers()
    info["pyfacedlib_version"] = __version__
    return info


__all__ = [
    "AlignmentSettings", "CheckpointError", "ChipCache", "ClusterSettings", "DeviceError", "archive",
    "ConversionReport", "EmbedderSettings", "Face",
    "FaceEmbedder", "FaceSet", "FaceTable",
    "FinetuneConfig", "FinetuneResult", "Gallery", "GalleryConfig", "GalleryError", "ImageError", "Match",
    "ModelFormatError", "ModelNotFoundError", "NoFaceFoundError", "SearchHit", "align", "as_rgb", "build_info",
    "chipcache", "cluster", "convert_affine_to_bn", "convert_bn_to_affine", "convert_to_onnx", "datasets",
    "distance", "evaluate", "evaluate_folders", "finetune", "from_bgr", "load_faces", "load_image", "models",
    "parse_strategy", "quality",
]
