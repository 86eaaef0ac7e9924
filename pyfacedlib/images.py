"""Turning what users pass as an image into the uint8 RGB array the core expects.

Accepted everywhere an image is taken: a file path (EXIF orientation applied), a numpy uint8 array
(RGB, grayscale or RGBA), or a PIL.Image. OpenCV frames are BGR: pass `from_bgr(frame)`.
"""
from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Union, cast

import numpy as np

from .errors import ImageError

if TYPE_CHECKING:
    from PIL import Image as PILImage

ImageLike = Union[str, os.PathLike, np.ndarray, "PILImage.Image"]


# What load_image decodes: real image formats only. A file named .jpg that is really EPS/PDF must
# never reach Ghostscript, nor any of Pillow's rarer, less audited decoders (formats not
# registered in this Pillow, e.g. HEIF without pillow-heif, are left out).
IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "BMP", "DIB", "GIF", "TIFF", "WEBP", "PPM", "TGA", "AVIF", "HEIF")

# Largest decoded image load_image accepts, in pixels (width x height), unless told otherwise:
# Pillow's own warning level (PIL.Image.MAX_IMAGE_PIXELS, ~89.5 MP: about 270 MB as RGB). Change it
# here for the whole process, or per call (load_image's max_pixels; AlignmentSettings.max_image_pixels).
DEFAULT_MAX_IMAGE_PIXELS = 89_478_485
MAX_IMAGE_PIXELS = DEFAULT_MAX_IMAGE_PIXELS

_MB = 1_000_000
_CONVERT_ROWS_PIXELS = 1 << 20  # float work of wide integer images is done this many pixels at a time


def _pillow_formats() -> list[str]:
    from PIL import Image

    Image.init()  # registers every plugin of this Pillow, so the list below is complete
    return [f for f in IMAGE_FORMATS if f in Image.OPEN]


def _to_uint8(values: np.ndarray, top: int) -> np.ndarray:
    """values (integers 0..top) scaled to 0..255, rounded; no float copy of the image (a lookup
    table for 16-bit, bounded blocks of rows otherwise)."""
    if top < 1 << 17:
        table = np.round(np.arange(top + 1, dtype=np.float64) * (255.0 / top)).clip(0, 255).astype(np.uint8)
        return table[values]  # values <= top: top is 65535 for 16-bit, the maximum for 32-bit
    out = np.empty(values.shape, np.uint8)
    rows = max(1, _CONVERT_ROWS_PIXELS // max(1, values.shape[1] if values.ndim > 1 else 1))
    for start in range(0, len(values), rows):
        block = values[start:start + rows].astype(np.float64) * (255.0 / top)
        out[start:start + rows] = np.round(block).clip(0, 255)
    return out


def _from_pil(img, source: str) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        if img.mode == "I":
            values = np.asarray(img, dtype=np.int32)
            values = np.maximum(values, 0) if values.size and values.min() < 0 else values
            top = max(int(values.max()) if values.size else 1, 1)
        else:
            values, top = np.asarray(img, dtype=np.uint16), 65535
        gray = _to_uint8(values, top)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if img.mode == "F":
        raise ImageError(f"{source}: floating-point images are not supported; save it as 8-bit")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def _oriented(img: PILImage.Image) -> PILImage.Image:
    """The image turned upright as its EXIF Orientation tag says (phone photos); unchanged without one."""
    from PIL import ImageOps

    if img.getexif().get(0x0112, 1) in (1, None):  # upright already: no copy (one of a 100 MP photo is 400 MB)
        return img
    return ImageOps.exif_transpose(img) or img


_pillow_limit_lock = threading.Lock()


def _allow_in_pillow(max_pixels: int) -> None:
    """Pillow refuses (DecompressionBombError) images above twice PIL.Image.MAX_IMAGE_PIXELS and warns
    above it, before load_image sees the size: a limit raised past Pillow's raises Pillow's with it
    (process-wide, never lowered), so the one limit that applies is pyfacedlib's."""
    from PIL import Image

    if Image.MAX_IMAGE_PIXELS is None or max_pixels <= Image.MAX_IMAGE_PIXELS:
        return
    with _pillow_limit_lock:
        if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
            Image.MAX_IMAGE_PIXELS = int(max_pixels)


def check_pixel_limit(width: int, height: int, max_pixels: int | None, source: str) -> None:
    """Raises ImageError naming `source` and its size when width x height exceeds max_pixels (None:
    the module's MAX_IMAGE_PIXELS; 0: no limit)."""
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if limit and width * height > limit:
        raise ImageError(
            f"image {source} is {width}x{height} = {width * height / _MB:.1f} MP, above the limit of "
            f"{limit / _MB:.1f} MP (max_image_pixels; raise it to read this image: it needs about "
            f"{3 * width * height / _MB:.0f} MB decoded)")


def load_image(path: str | os.PathLike, exif_orientation: bool = True, max_pixels: int | None = None) -> np.ndarray:
    """Reads an image file into an (H, W, 3) uint8 RGB array.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit files are converted. The EXIF
    Orientation tag is applied (a phone photo taken sideways comes out upright) unless
    exif_orientation=False, which reads the stored pixels as dlib.load_rgb_image does. Only image
    formats are decoded (IMAGE_FORMATS: a .jpg that is really PostScript is refused, never handed
    to Ghostscript). max_pixels: the largest image accepted, width x height (None: the module's
    MAX_IMAGE_PIXELS, ~89.5 MP; 0: no limit); the size is checked before the pixels are decoded.
    Raises ImageError naming the file when it is missing, cannot be decoded or is too large.
    """
    from PIL import Image, UnidentifiedImageError

    source = os.fspath(path)
    limit = MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if limit:
        _allow_in_pillow(limit)
    try:
        with Image.open(source, formats=_pillow_formats()) as img:
            check_pixel_limit(img.width, img.height, limit, source)
            img.load()
            array = _from_pil(_oriented(img) if exif_orientation else img, source)
    except FileNotFoundError as exc:
        raise ImageError(f"image file not found: {source}") from exc
    except Image.DecompressionBombError as exc:  # above twice Pillow's limit: refused inside Image.open
        raise ImageError(f"image {source} is too large to decode (max_image_pixels; Pillow: {exc})") from exc
    except MemoryError as exc:  # a transient failure (errors.error_kind): worth a retry
        raise ImageError(f"cannot read image {source}: out of memory (MemoryError)") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
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
