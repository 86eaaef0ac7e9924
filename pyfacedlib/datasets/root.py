"""Where the datasets are: the one rule the CLI, the tests and the benchmarks share."""
from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "PYFACEDLIB_DATA"


def data_root(checkout: str | os.PathLike | None = None) -> Path:
    """$PYFACEDLIB_DATA, else ../shared/datasets beside `checkout` (default: the working directory),
    the layout of a project workspace: <checkout>/../shared/datasets/{lfw,dlib-johns}."""
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV])
    return Path(checkout if checkout is not None else ".") / ".." / "shared" / "datasets"
