"""Exceptions raised by pyfacedlib."""
from __future__ import annotations


class ModelFormatError(ValueError):
    """A model file is missing, unreadable, truncated, corrupt, or not the kind of model expected."""


class ModelNotFoundError(FileNotFoundError):
    """A named model file cannot be found (and the message says how to get it)."""


class ImageError(ValueError):
    """An image cannot be read or has a shape/type pyfacedlib cannot use."""


class GalleryError(ValueError):
    """A gallery cannot be used as asked: another model or alignment settings than its descriptors
    were made with, a missing model, a file that is not a gallery, or no enrolment folder to sync."""


class NoFaceFoundError(ImageError):
    """An image that must hold a face (a search query) holds none the detector can find."""


class DeviceError(RuntimeError):
    """A device was asked for that this installation or machine does not have (device="cuda" with a
    CPU-only build, or with no GPU found); the message says which and why."""
