"""Build pyfacedlib's C++ core: fetch the pinned dlib source distribution, then CMake.

Environment variables:
  PYFACEDLIB_CUDA=AUTO|ON|OFF     dlib's CUDA backend (AUTO: when nvcc and cuDNN are found)
  PYFACEDLIB_NATIVE=1             compile for this CPU (-march=native); default is portable
  PYFACEDLIB_DLIB_SOURCE=PATH     a dlib-20.0.1 sdist (.tar.gz) or unpacked tree, instead of pip
  PYFACEDLIB_BUILD_DIR=PATH       persistent CMake build directory (default: build/cmake)
  PYFACEDLIB_JOBS=N               parallel compile jobs (default: CPU count)
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

DLIB_VERSION = "20.0.1"
ROOT = Path(__file__).resolve().parent


def _unpack_sdist(archive: Path, dest: Path) -> Path:
    """Unpacks a dlib sdist into dest and returns the tree holding dlib/CMakeLists.txt."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent))
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            target = (tmp / member.name).resolve()
            if not str(target).startswith(str(tmp.resolve())) or member.issym() or member.islnk():
                raise RuntimeError(f"refusing unsafe path {member.name!r} in {archive}")
        tar.extractall(tmp)
    (tree,) = [p for p in tmp.iterdir() if (p / "dlib" / "CMakeLists.txt").exists()]
    if dest.exists():
        shutil.rmtree(dest)
    tree.rename(dest)
    shutil.rmtree(tmp)
    return dest


def dlib_source(cache: Path) -> Path:
    """The unpacked dlib source tree: from PYFACEDLIB_DLIB_SOURCE, the cache, or `pip download`."""
    given = os.environ.get("PYFACEDLIB_DLIB_SOURCE")
    if given:
        path = Path(given).resolve()
        if (path / "dlib" / "CMakeLists.txt").exists():
            return path
        if path.is_file():
            return _unpack_sdist(path, cache / f"dlib-{DLIB_VERSION}")
        raise RuntimeError(f"PYFACEDLIB_DLIB_SOURCE={given} is neither a dlib source tree nor an sdist")
    tree = cache / f"dlib-{DLIB_VERSION}"
    if (tree / "dlib" / "CMakeLists.txt").exists():
        return tree
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as download:
        print(f"pyfacedlib: fetching the dlib=={DLIB_VERSION} source distribution with pip", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "dlib",
             f"dlib=={DLIB_VERSION}", "-d", download],
            check=True,
        )
        (archive,) = Path(download).glob(f"dlib-{DLIB_VERSION}.tar.gz")
        return _unpack_sdist(archive, tree)


def blas_library() -> Path:
    """libscipy_openblas.so from the scipy-openblas32 wheel (a build requirement)."""
    import scipy_openblas32

    lib = Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"
    if not lib.exists():
        raise RuntimeError(f"scipy-openblas32 is installed but {lib} is missing")
    return lib


def cudnn_root() -> str | None:
    """The cuDNN of an nvidia-cudnn-cu12/cu13 wheel, when one is installed."""
    try:
        import nvidia.cudnn  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(Path(list(nvidia.cudnn.__path__)[0]))


class BuildPyWithManifest(build_py):
    """Ships models/manifest.json inside the package as pyfacedlib/model_manifest.json."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "pyfacedlib" / "model_manifest.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / "models" / "manifest.json", target)


class CMakeExtension(Extension):
    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        import pybind11

        build_dir = Path(os.environ.get("PYFACEDLIB_BUILD_DIR", ROOT / "build" / "cmake")).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        source = dlib_source(ROOT / "build" / "_deps")
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        native = os.environ.get("PYFACEDLIB_NATIVE", "0").lower() in ("1", "on", "true", "yes")
        args = [
            f"-DDLIB_SOURCE_DIR={source}",
            f"-DPYFACEDLIB_DLIB_VERSION={DLIB_VERSION}",
            f"-DPYFACEDLIB_BLAS_LIBRARY={blas_library()}",
            f"-DPYFACEDLIB_CUDA={os.environ.get('PYFACEDLIB_CUDA', 'AUTO')}",
            f"-DPYFACEDLIB_NATIVE={'ON' if native else 'OFF'}",
            f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DPython_EXECUTABLE={sys.executable}",
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={build_dir / 'lib'}",
        ]
        cudnn = cudnn_root()
        if cudnn:
            args.append(f"-DCUDNN_ROOT={cudnn}")
        ccache = shutil.which("ccache")
        if ccache:
            args += [f"-DCMAKE_CXX_COMPILER_LAUNCHER={ccache}", f"-DCMAKE_C_COMPILER_LAUNCHER={ccache}"]
        if not (build_dir / "CMakeCache.txt").exists() and shutil.which("ninja"):
            args.append("-GNinja")
        subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args], check=True)
        jobs = os.environ.get("PYFACEDLIB_JOBS", str(os.cpu_count() or 2))
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "_core", "-j", jobs], check=True)
        (built,) = (build_dir / "lib").glob("_core*.so")
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / (built.name + ".tmp")
        shutil.copy2(built, tmp)
        os.replace(tmp, out_dir / built.name)


setup(ext_modules=[CMakeExtension("pyfacedlib._core")], cmdclass={"build_ext": CMakeBuild, "build_py": BuildPyWithManifest})
