"""Figures written to files: matplotlib without a display (Agg), saved atomically."""
from __future__ import annotations

import os
from typing import Any

from . import _atomic


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed, safe in worker processes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 100) -> None:
    """Writes `fig` as a PNG to `path` atomically and closes it."""
    with _atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
