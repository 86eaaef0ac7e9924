"""Atomic file writes: a temporary file beside the target, then a rename.

A temporary is named `.<target name>.<host>~<pid>.<random>.tmp`: a process killed while writing
(even SIGKILL) leaves one behind, and the next write of that target (or remove_stale_temporaries)
removes it once its writer is gone, never while the writer still runs.
"""
from __future__ import annotations

import glob
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from . import _faults

# a temporary of an unknown writer (another host, an older pyfacedlib) is removed only this old
STALE_AFTER_S = 24 * 3600.0


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64] or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OSError:
        return True
    return True


def _is_stale(tmp: Path, now: float) -> bool:
    try:
        age = now - tmp.stat().st_mtime
    except OSError:  # gone already
        return False
    if age > STALE_AFTER_S:
        return True
    writer = tmp.name[:-len(".tmp")].rsplit(".", 2)
    match = re.fullmatch(r"(.+)~(\d+)", writer[1]) if len(writer) == 3 else None
    if match is None or match.group(1) != _host():
        return False  # an older name, or another host's writer: only the age tells
    return not _alive(int(match.group(2)))


def remove_stale_temporaries(target: str | os.PathLike, name_pattern: str | None = None) -> list[Path]:
    """Removes the temporaries that killed writers left beside `target` (atomic_path's
    `.NAME.HOST~PID.*.tmp`): those whose writer process on this host is gone, and any older than
    STALE_AFTER_S. A live writer's temporary (this or another process) is never touched.
    name_pattern: a glob of target names instead of target's own (e.g. "part-*.parquet" in
    target's folder). Returns the files removed."""
    target = Path(target)
    pattern = name_pattern if name_pattern is not None else glob.escape(target.name)
    removed: list[Path] = []
    now = time.time()
    try:
        candidates = list(target.parent.glob(f".{pattern}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        if _is_stale(tmp, now):
            try:
                tmp.unlink()
                removed.append(tmp)
            except OSError:
                pass
    return removed


@contextmanager
def atomic_path(target: str | os.PathLike, clean: bool = True) -> Iterator[Path]:
    """Yields a temporary path in target's folder; on success renames it over target.

    On any exception the temporary file is removed and target is left untouched. clean: first
    remove the stale temporaries of target that killed writers left (remove_stale_temporaries);
    writers of many files in one folder pass False and clean the folder once.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if clean:
        remove_stale_temporaries(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{_host()}~{os.getpid()}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _faults.point("write")  # the fault-injection tests' "during a write": the data is in tmp, not yet in target
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_bytes(target: str | os.PathLike, data: bytes, clean: bool = True) -> None:
    """Writes data to target atomically (clean: as atomic_path's)."""
    with atomic_path(target, clean=clean) as tmp:
        tmp.write_bytes(data)


def write_text(target: str | os.PathLike, text: str) -> None:
    """Writes text (UTF-8) to target atomically."""
    write_bytes(target, text.encode("utf-8"))


def write_npy(target: str | os.PathLike, array) -> None:
    """Writes a numpy array as .npy to target atomically."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(target, buffer.getvalue())
