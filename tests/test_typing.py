"""The Python layer is typed to the bottom: _core.pyi matches the built extension, and mypy passes."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO, skip_or_fail

import pyfacedlib as pfd

PACKAGE = Path(pfd.__file__).resolve().parent


def _tool(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        skip_or_fail(f"{module} (a test dependency) is not installed")


def test_core_stubs_match_the_built_extension(tmp_path):
    _tool("pybind11_stubgen")
    # the imported package (installed, or built in place); cwd elsewhere, so `-m` cannot pick up a
    # checkout's source folder that has no compiled _core
    env = {**os.environ, "PYTHONPATH": str(PACKAGE.parent)}
    run = subprocess.run([sys.executable, "-m", "pybind11_stubgen", "pyfacedlib._core", "-o", str(tmp_path / "out")],
                         capture_output=True, text=True, env=env, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    tmp_path = tmp_path / "out"
    generated = (tmp_path / "pyfacedlib" / "_core.pyi").read_text()
    committed = (REPO / "pyfacedlib" / "_core.pyi").read_text()
    assert generated == committed, (
        "pyfacedlib/_core.pyi is out of date with the extension: regenerate it with "
        "`PYTHONPATH=. python -m pybind11_stubgen pyfacedlib._core -o .` after building in place")


def test_mypy_passes_on_the_package():
    _tool("mypy")
    if shutil.which("mypy") is None and not (Path(sys.executable).parent / "mypy").exists():
        skip_or_fail("mypy is not on PATH")
    run = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
                          str(REPO / "pyfacedlib")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
