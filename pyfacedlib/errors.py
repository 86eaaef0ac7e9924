"""Exceptions raised by pyfacedlib."""
from __future__ import annotations


class ModelFormatError(ValueError):
    """A model file is missing, unreadable, truncated, corrupt, or not the kind of model expected."""


class CheckpointError(ModelFormatError):
    """A fine-tuning checkpoint cannot be resumed: checkpoint.bin is unreadable, corrupt, or not the
    one checkpoint.json was written with (the message names the file and says what to do)."""


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


# Kinds of per-photo errors in face tables (the `error_kind` column):
#   "unreadable":       the file cannot be used as it is: not found, permission denied, not an image,
#                       decoding failed. Retrying will not help.
#   "transient":        MemoryError, or an I/O error other than not-found/permission (EIO, a network
#                       file system hiccup...): worth retrying on resume.
#   "detection_failed": the image was read, the face detector raised.
ERROR_KINDS = ("unreadable", "transient", "detection_failed")

_UNREADABLE_ERRNOS = frozenset({1, 2, 13, 20, 21, 36, 40})  # EPERM ENOENT EACCES ENOTDIR EISDIR ENAMETOOLONG ELOOP


def error_kind(exc: BaseException, detecting: bool = False) -> str:
    """The ERROR_KINDS entry of an exception that stopped one photo (its causes are looked at too:
    ImageError wraps the OSError that decoding raised). detecting: it came from the face detector
    (the image was read), so anything but a MemoryError is "detection_failed"."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    if any(isinstance(e, MemoryError) for e in chain):
        return "transient"
    if detecting:
        return "detection_failed"
    for e in chain:
        if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)):
            return "unreadable"
        if isinstance(e, OSError) and e.errno is not None:  # PIL's decoding errors carry no errno
            return "unreadable" if e.errno in _UNREADABLE_ERRNOS else "transient"
    return "unreadable"


def error_kind_of_message(message: str | None) -> str | None:
    """The ERROR_KINDS entry of an error message as pyfacedlib.photos writes it (for results and
    tables that carry the message only); None for no error."""
    import re

    if not message:
        return None
    if "MemoryError" in message:
        return "transient"
    if message.startswith("face detection failed"):
        return "detection_failed"
    number = re.search(r"\[Errno (\d+)\]", message)
    if number:
        return "unreadable" if int(number.group(1)) in _UNREADABLE_ERRNOS else "transient"
    return "unreadable"
