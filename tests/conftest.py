"""Shared fixtures: real data from ../shared/datasets (or $PYFACEDLIB_DATA), dlib's own binding."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_report_header(config) -> str:
    """Which pyfacedlib the run tests: a checkout's in-place build or an installed wheel."""
    import sys

    import pyfacedlib as pfd

    return f"pyfacedlib {pfd.__version__} from {Path(pfd.__file__).parent} (Python {sys.version.split()[0]})"


def data_root() -> Path:
    """Where the datasets live: $PYFACEDLIB_DATA, else ../shared/datasets beside the checkout."""
    from pyfacedlib.datasets import data_root

    return data_root(REPO)


def in_ci() -> bool:
    """CI runs with CI=true: there, missing test data or a missing test dependency fails the run."""
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def skip_or_fail(reason: str) -> None:
    """Skips the test outside CI; in CI a test that cannot run is a failure, never a silent skip."""
    if in_ci():
        pytest.fail(f"{reason} -- in CI (CI is set) this is a failure, not a skip", pytrace=False)
    pytest.skip(reason)


def _require(path: Path, what: str) -> Path:
    if not path.exists():
        skip_or_fail(f"{what} not found at {path} (set PYFACEDLIB_DATA to the datasets folder)")
    return path


@pytest.fixture(scope="session")
def johns_dir() -> Path:
    return _require(data_root() / "dlib-johns", "dlib-johns chips")


@pytest.fixture(scope="session")
def lfw_dir() -> Path:
    return _require(data_root() / "lfw" / "lfw-deepfunneled", "LFW deep-funneled images")


@pytest.fixture(scope="session")
def johns(johns_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """All 55 dlib-johns chips (55,150,150,3) uint8 and their identity labels."""
    import pyfacedlib as pfd

    files = sorted(p for p in johns_dir.glob("*/*") if p.suffix.lower() in (".jpg", ".png"))
    chips = np.stack([pfd.load_image(p) for p in files])
    labels = np.array([p.parent.name for p in files])
    return chips, labels


@pytest.fixture(scope="session")
def dlib_bin():
    """dlib's official Python binding (the dlib-bin wheel), the parity reference."""
    try:
        import dlib
    except ImportError:
        skip_or_fail("dlib-bin (a test dependency) is not installed")
    return dlib


@pytest.fixture(scope="session")
def embedder():
    import pyfacedlib as pfd

    return pfd.FaceEmbedder()


@pytest.fixture(scope="session")
def lfw_sample(lfw_dir: Path) -> list[Path]:
    """24 LFW images: the first image of every 200th identity folder (a fixed, spread-out sample)."""
    people = sorted(p for p in lfw_dir.iterdir() if p.is_dir())
    return [sorted(person.glob("*.jpg"))[0] for person in people[::200][:24]]


def cpu_conv_kernels() -> list[str] | None:
    """The convolution kernels this CPU runs by /proc/cpuinfo's flags (avx512: avx512f + fma, avx2:
    avx2 + fma; blas everywhere), fastest first: what build_info()["conv_kernels"] must list, read
    independently of the extension's own CPU check. None without /proc/cpuinfo."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return None
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.split(":")[0].strip() in ("flags", "Features"):
            flags.update(line.split(":", 1)[1].split())
    direct = [name for name, needs in (("avx512", {"avx512f", "fma"}), ("avx2", {"avx2", "fma"})) if needs <= flags]
    return direct + ["blas"]


CPU_KERNELS = cpu_conv_kernels()


def kernels_to_test() -> list[str]:
    """The kernels the kernel tests run on: the CPU's own list (so a broken CPU check in the
    extension cannot leave a direct kernel untested), build_info's where /proc/cpuinfo is missing."""
    import pyfacedlib as pfd

    return CPU_KERNELS if CPU_KERNELS is not None else pfd.build_info()["conv_kernels"]

