"""Turning what users pass as an image into the uint8 RGB array the core expects.

Accepted everywhere an image is taken: a file path (EXIF orientation applied), a numpy uint8 array
(RGB, grayscale or RGBA), or a PIL.Image. OpenCV frames are BGR: pass `from_bgr(frame)`.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Union, cast

import numpy as np

from .errors import ImageError

if TYPE_CHECKING:
    from PIL import Image as PILImage

ImageLike = Union[str, os.PathLike, np.ndarray, "PILImage.Image"]


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


def _oriented(img: PILImage.Image) -> PILImage.Image:
    """The image turned upright as its EXIF Orientation tag says (phone photos); unchanged without one."""
    from PIL import ImageOps

    return ImageOps.exif_transpose(img) or img


def load_image(path: str | os.PathLike, exif_orientation: bool = True) -> np.ndarray:
    """Reads an image file into an (H, W, 3) uint8 RGB array.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit files are converted. The EXIF
    Orientation tag is applied (a phone photo taken sideways comes out upright) unless
    exif_orientation=False, which reads the stored pixels as dlib.load_rgb_image does. Raises
    ImageError naming the file when it is missing or cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    source = os.fspath(path)
    try:
        with Image.open(source) as img:
            img.load()
            array = _from_pil(_oriented(img) if exif_orientation else img, source)
    except FileNotFoundError as exc:
        raise ImageError(f"image file not found: {source}") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(f"cannot read image {source}: {exc}") from exc
    if array.size == 0:
        raise ImageError(f"image {source} has no pixels")
    return array


def _is_pil_image(image: object) -> bool:
    import sys

    pil = sys.modules.get("PIL.Image")  # a PIL image exists only if PIL was imported
    return pil is not None and isinstance(image, pil.Image)


def as_rgb(image: ImageLike) -> np.ndarray:
    """An (H, W, 3) uint8 C-contiguous RGB array from a path, a numpy image or a PIL.Image.

    Paths are read with load_image (EXIF orientation applied). PIL images are converted like
    files (EXIF orientation applied when they carry it). Arrays must be uint8 RGB: (H, W) or
    (H, W, 1) grayscale (replicated), (H, W, 3) RGB, or (H, W, 4) RGBA (alpha dropped); an OpenCV
    (BGR) frame goes through from_bgr() first. Anything else raises TypeError (wrong type/dtype)
    or ImageError, a ValueError (wrong shape, no pixels).
    """
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    if _is_pil_image(image):
        pil = cast("PILImage.Image", image)
        if pil.width == 0 or pil.height == 0:
            raise ImageError(f"image has no pixels (size {pil.size})")
        return _from_pil(_oriented(pil), f"PIL image ({pil.mode}, {pil.width}x{pil.height})")
    if not isinstance(image, np.ndarray):
        raise TypeError("expected an image as a file path, a numpy uint8 array or a PIL.Image, "
                        f"got {type(image).__name__}")
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


def from_bgr(frame: np.ndarray) -> np.ndarray:
    """An OpenCV frame (uint8 BGR (H, W, 3), BGRA (H, W, 4) or grayscale) as the RGB array pyfacedlib takes.

    OpenCV (cv2.imread, cv2.VideoCapture) stores channels blue-green-red; passing such a frame as
    it is would swap red and blue and give wrong descriptors silently. Use:
    ``faces = embedder.embed_image(pfd.from_bgr(frame))``.
    """
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"expected an OpenCV frame (numpy uint8 array), got {type(frame).__name__}")
    if frame.ndim == 3 and frame.shape[2] in (3, 4):
        return as_rgb(np.ascontiguousarray(frame[:, :, 2::-1]))
    return as_rgb(frame)
