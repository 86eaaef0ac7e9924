"""The code is lint-clean: `ruff check` (configured in pyproject.toml) over the package, the tests,
the benchmarks and the build scripts."""
from __future__ import annotations

import importlib.util
import subprocess
import sys

from conftest import REPO, skip_or_fail

PLACES = ["pyfacedlib", "tests", "benchmarks", "setup.py", "build_backend", ".ci/build-wheels"]


def test_ruff_is_clean():
    if importlib.util.find_spec("ruff") is None:
        skip_or_fail("ruff is not installed (pip install '.[test]')")
    places = [p for p in PLACES if (REPO / p).exists()]
    run = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *places], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
