"""Named fault points, for the fault-injection tests (tests/test_faults.py).

The long verbs call `point(name)` at the moments a crash would hurt most (after each photo, just
before a file is renamed into place, between the files of an export, after a training step).
`PYFACEDLIB_FAULT="NAME:N"` makes the process kill itself with SIGKILL the N-th time it passes
point NAME (`NAME:N:SIGINT` sends SIGINT instead: an interrupt, as Ctrl-C). Unset — always, outside
the tests — a point costs one comparison. A fault at a chosen moment, not after a chosen time, makes
the tests exact and fast.
"""
from __future__ import annotations

import os
import signal
import threading

ENVIRONMENT = "PYFACEDLIB_FAULT"
POINTS = ("photo", "write", "part", "step", "export")  # the names the code passes

_spec = os.environ.get(ENVIRONMENT, "")
_counts: dict[str, int] = {}
_lock = threading.Lock()


def point(name: str) -> None:
    """A moment the fault-injection tests may stop the process at (see the module docstring)."""
    if not _spec:
        return
    target, _, rest = _spec.partition(":")
    if target != name:
        return
    count, _, signal_name = rest.partition(":")
    with _lock:
        _counts[name] = _counts.get(name, 0) + 1
        reached = _counts[name] == int(count or 1)
    if reached:
        os.kill(os.getpid(), getattr(signal, signal_name or "SIGKILL"))
