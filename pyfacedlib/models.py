"""Model files: resolved by name and verified against the manifest kept in models/."""
from __future__ import annotations

import importlib.util
import json
import os
from functools import cache, lru_cache
from pathlib import Path

from ._system import file_sha256
from .errors import ModelFormatError, ModelNotFoundError

FACE_RECOGNITION = "dlib_face_recognition_resnet_model_v1"
LANDMARKS_5 = "shape_predictor_5_face_landmarks"
LANDMARKS_68 = "shape_predictor_68_face_landmarks"
CNN_DETECTOR = "mmod_human_face_detector"

_HERE = Path(__file__).resolve().parent


@lru_cache(maxsize=1)
def manifest() -> dict:
    """The model manifest: name -> {file, sha256, bytes, what}."""
    for candidate in (_HERE / "model_manifest.json", _HERE.parent / "models" / "manifest.json"):
        if candidate.exists():
            return json.loads(candidate.read_text())["models"]
    raise RuntimeError("pyfacedlib's model manifest is missing from the installation")


def names() -> list[str]:
    """Names of the models pyfacedlib knows."""
    return sorted(manifest())


def _search_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("PYFACEDLIB_MODELS"):
        dirs.append(Path(os.environ["PYFACEDLIB_MODELS"]))
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            dirs.append(Path(location) / "models")
    return dirs


@cache
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    """file_sha256, remembered per (path, size, mtime): models are verified once per process."""
    return file_sha256(path)


def is_model(path: str | os.PathLike, name: str) -> bool:
    """Whether `path` is byte-for-byte the manifest's model `name` (hashed once per process)."""
    entry = manifest()[name]
    try:
        stat = Path(path).stat()
        return stat.st_size == entry["bytes"] and _sha256(str(path), stat.st_size, stat.st_mtime_ns) == entry["sha256"]
    except OSError:
        return False


def verify(path: str | os.PathLike, name: str) -> None:
    """Raises ModelFormatError unless `path` is byte-for-byte the manifest's model `name`."""
    entry = manifest()[name]
    stat = Path(path).stat()
    if stat.st_size != entry["bytes"] or _sha256(str(path), stat.st_size, stat.st_mtime_ns) != entry["sha256"]:
        raise ModelFormatError(
            f"{path} is not the expected {entry['file']} (size or sha256 differs from models/manifest.json); "
            "it may be truncated or a different file")


def path(name: str) -> str:
    """Absolute path of the verified model file `name` (e.g. "dlib_face_recognition_resnet_model_v1").

    Looks in $PYFACEDLIB_MODELS first, then in the face_recognition_models package.
    Raises KeyError for an unknown name, ModelNotFoundError when no copy is found,
    ModelFormatError when the copy found does not match the manifest's sha256.
    """
    known = manifest()
    if name.endswith(".dat"):
        name = name[:-4]
    if name not in known:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(known))}")
    entry = known[name]
    searched = _search_dirs()
    for directory in searched:
        candidate = directory / entry["file"]
        if candidate.exists():
            verify(candidate, name)
            return str(candidate.resolve())
    raise ModelNotFoundError(
        f"model {entry['file']} not found (searched: {', '.join(map(str, searched)) or 'nothing'}). "
        "Install it with `pip install face_recognition_models`, or put the file in a folder and "
        "set PYFACEDLIB_MODELS to that folder.")
