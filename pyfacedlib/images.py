"""Turning what users pass as an image into the uint8 RGB array the core expects."""
from __future__ import annotations

import os
from typing import Union

import numpy as np

from .errors import ImageError

ImageLike = Union[str, os.PathLike, np.ndarray]


def _from_pil(img, source: str) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(img, dtype=np.uint32 if img.mode == "I" else np.uint16)
        top = 65535 if img.mode != "I" else max(int(values.max()), 1)
        gray = np.round(values.astype(np.float64) * (255.0 / top)).clip(0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode == "F":
        raise ImageError(f"{source}: floating-point images are not supported; save it as 8-bit")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Reads an image file into an (H, W, 3) uint8 RGB array.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit files are converted.
    EXIF orientation is not applied (as dlib.load_rgb_image). Raises ImageError naming the file
    when it is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    source = os.fspath(path)
    try:
        with Image.open(source) as img:
            img.load()
            array = _from_pil(img, source)
    except FileNotFoundError as exc:
        raise ImageError(f"image file not found: {source}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"cannot read image {source}: {exc}") from exc
    if array.size == 0:
        raise ImageError(f"image {source} has no pixels")
    return array


def as_rgb(image: ImageLike) -> np.ndarray:
    """An (H, W, 3) uint8 C-contiguous RGB array from a path or a numpy image.

    Arrays must be uint8: (H, W) or (H, W, 1) grayscale (replicated to RGB), (H, W, 3) RGB,
    or (H, W, 4) RGBA (alpha dropped). Anything else raises TypeError (wrong type/dtype) or
    ImageError, a ValueError (wrong shape, no pixels).
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if not isinstance(image, np.ndarray):
        raise TypeError(f"expected an image as a file path or a numpy uint8 array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise TypeError(
            f"expected a uint8 image (values 0..255), got dtype {image.dtype}; convert it first, "
            "e.g. (img * 255).round().astype(np.uint8) for floats in [0, 1]")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = image[:, :, :3]
    elif not (image.ndim == 3 and image.shape[2] == 3):
        raise ImageError(
            f"expected an image shaped (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageError(f"image has no pixels (shape {image.shape})")
    return np.ascontiguousarray(image)
