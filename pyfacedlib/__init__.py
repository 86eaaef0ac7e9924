"""pyfacedlib: fine-tunable dlib face recognition, driven from Python.

    import pyfacedlib as pfd
    emb = pfd.FaceEmbedder()
    faces = emb.embed_image("photo.jpg")          # detect -> landmarks -> chip -> 128-D descriptor
    d = emb.embed_chips(chips)                     # (N,150,150,3) uint8 aligned chips -> (N,128)
"""
from __future__ import annotations

from . import align, datasets, evaluate, models
from ._native import core as _core
from .convert import ConversionReport, convert_affine_to_bn, convert_bn_to_affine
from .embedder import Face, FaceEmbedder, distance
from . import finetune as finetune_module
from .finetune import FinetuneResult, finetune
from .errors import ImageError, ModelFormatError, ModelNotFoundError
from .images import as_rgb, from_bgr, load_image

__version__ = "0.1.0"


def build_info() -> dict:
    """What this installation was built with: dlib_version, blas, cuda (bool), simd, compiler flags."""
    info = dict(_core.build_info())
    info["pyfacedlib_version"] = __version__
    return info


__all__ = [
    "ConversionReport", "convert_affine_to_bn", "convert_bn_to_affine", "Face", "FaceEmbedder", "ImageError", "ModelFormatError", "ModelNotFoundError", "align", "as_rgb",
    "FinetuneResult", "build_info", "finetune_module", "datasets", "finetune", "distance", "evaluate", "from_bgr", "load_image", "models",
]
