"""pyfacedlib: fine-tunable dlib face recognition, driven from Python.

    import pyfacedlib as pfd
    emb = pfd.FaceEmbedder()
    faces = emb.embed_image("photo.jpg")          # detect -> landmarks -> chip -> 128-D descriptor
    d = emb.embed_chips(chips)                     # (N,150,150,3) uint8 aligned chips -> (N,128)
"""
from __future__ import annotations

from . import align, archive, chipcache, datasets, evaluate, models
from .bench import evaluate_folders
from .clustering import cluster
from ._finetune import FinetuneConfig, FinetuneResult, finetune, parse_strategy
from ._native import core as _core
from .chipcache import AlignmentSettings, ChipCache
from .convert import ConversionReport, convert_affine_to_bn, convert_bn_to_affine
from .embedder import Face, FaceEmbedder, distance
from .errors import GalleryError, ImageError, ModelFormatError, ModelNotFoundError, NoFaceFoundError
from .faces import FaceSet, load_faces
from .facetable import FaceTable
from .gallery import Gallery, GalleryConfig, Match, SearchHit
from .images import as_rgb, from_bgr, load_image

__version__ = "0.1.0"


def build_info() -> dict:
    """What this installation was built with: dlib_version, blas, cuda (bool), simd, compiler flags."""
    info = dict(_core.build_info())
    info["pyfacedlib_version"] = __version__
    return info


__all__ = [
    "AlignmentSettings", "ChipCache", "archive", "ConversionReport", "Face", "FaceEmbedder", "FaceSet", "FaceTable",
    "FinetuneConfig", "FinetuneResult", "Gallery", "GalleryConfig", "GalleryError", "ImageError", "Match",
    "ModelFormatError", "ModelNotFoundError", "NoFaceFoundError", "SearchHit", "align", "as_rgb", "build_info",
    "chipcache", "cluster", "convert_affine_to_bn", "convert_bn_to_affine", "datasets", "distance", "evaluate",
    "evaluate_folders", "finetune", "from_bgr", "load_faces", "load_image", "models", "parse_strategy",
]
