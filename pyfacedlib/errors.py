"""Exceptions raised by pyfacedlib."""
from __future__ import annotations


class ModelFormatError(ValueError):
    """A model file is missing, unreadable, truncated, corrupt, or not the kind of model expected."""


class ModelNotFoundError(FileNotFoundError):
    """A named model file cannot be found (and the message says how to get it)."""


class ImageError(ValueError):
    """An image cannot be read or has a shape/type pyfacedlib cannot use."""
