"""Build pyfacedlib's C++ core: fetch the pinned dlib source distribution, then CMake.

Environment variables:
  PYFACEDLIB_CUDA=AUTO|ON|OFF     also build _core_cuda, dlib's CUDA backend (AUTO: when nvcc and the
                                  nvidia-* wheels of pyproject's `cuda` extra are importable; ON: or fail)
  PYFACEDLIB_NATIVE=1             compile for this CPU (-march=native); default is portable
  PYFACEDLIB_DLIB_SOURCE=PATH     a dlib-20.0.1 sdist (.tar.gz) or unpacked tree, instead of pip
  PYFACEDLIB_BUILD_DIR=PATH       persistent CMake build directory (default: build/cmake; the CUDA
                                  module builds in PATH-cuda)
  PYFACEDLIB_JOBS=N               parallel compile jobs (default: CPU count)
  PYFACEDLIB_ENGINE_DIR=PATH      link the engine (dlib + the C++ without Python) built there by
                                  build_engine() instead of compiling it (wheel builds; CPU only)
"""
from __future__ import annotations

import hashlib
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
# sha256 of dlib-20.0.1.tar.gz as PyPI serves it; every archive used for the build is checked against it.
DLIB_SDIST_SHA256 = "7cb2a09467de032332c743bc967007f016598c66c9c9ebc54a5b66d3d9e46d54"
ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "build_backend"))
from pyfacedlib_build import cuda_setting  # noqa: E402  (PYFACEDLIB_CUDA, read the one way)

# Written into an unpacked tree after its archive's sha256 was checked; a tree without it is re-fetched.
VERIFIED_STAMP = ".pyfacedlib-sdist-sha256"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_sdist(archive: Path) -> None:
    """Raises unless `archive` is byte for byte the pinned dlib source distribution."""
    actual = file_sha256(archive)
    if actual != DLIB_SDIST_SHA256:
        raise RuntimeError(
            f"{archive} is not the pinned dlib {DLIB_VERSION} source distribution: its sha256 is {actual}, "
            f"expected {DLIB_SDIST_SHA256} (setup.py pins it). Refusing to build from it.")


def _unpack_sdist(archive: Path, dest: Path) -> Path:
    """Unpacks a dlib sdist into dest and returns the tree holding dlib/CMakeLists.txt."""
    tmp = Path(tempfile.mkdtemp(dir=dest.parent))
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            target = (tmp / member.name).resolve()
            if not str(target).startswith(str(tmp.resolve())) or member.issym() or member.islnk():
                raise RuntimeError(f"refusing unsafe path {member.name!r} in {archive}")
        if hasattr(tarfile, "data_filter"):   # Python >= 3.10.12: no links, no special files
            tar.extractall(tmp, filter="data")
        else:
            tar.extractall(tmp)
    (tree,) = [p for p in tmp.iterdir() if (p / "dlib" / "CMakeLists.txt").exists()]
    (tree / VERIFIED_STAMP).write_text(DLIB_SDIST_SHA256)
    if dest.exists():
        shutil.rmtree(dest)
    tree.rename(dest)
    shutil.rmtree(tmp)
    return dest


def child_pip_environment() -> dict[str, str]:
    """The environment for a pip run from inside this build, without what the outer pip set for us.

    pip runs our build backend with variables naming *our* backend and its backend-path
    (`_PYPROJECT_HOOKS_BUILD_BACKEND`, `_PYPROJECT_HOOKS_BACKEND_PATH_JSON` in pip 26,
    `_PYPROJECT_HOOKS_BACKEND_PATH` before; older pips: `PEP517_*`).
    A child pip that prepares dlib's sdist would inherit them and look for dlib's backend in our
    build_backend/ ("Cannot find module 'setuptools.build_meta'"), as current pips do.
    """
    leaked = ("_PYPROJECT_HOOKS_", "PEP517_")
    return {name: value for name, value in os.environ.items() if not name.startswith(leaked)}


def download_sdist(dest: Path) -> Path:
    """Downloads the pinned dlib sdist into dest with pip and returns the archive's path.

    The sha256 is checked by pip before anything of the archive runs (`--require-hashes`): pip
    still prepares the sdist's metadata (runs dlib's setup.py), but only after the hash matched,
    and without installing dlib's build requirements (`--no-build-isolation`: the setuptools and
    packaging of this build environment). pip's own settings apply (index, proxy, `PIP_NO_INDEX`
    with `PIP_FIND_LINKS` for a local folder); the archive is checked again here all the same.
    """
    dest.mkdir(parents=True, exist_ok=True)
    requirement = dest / "dlib-requirement.txt"
    requirement.write_text(f"dlib=={DLIB_VERSION} --hash=sha256:{DLIB_SDIST_SHA256}\n")
    print(f"pyfacedlib: fetching the dlib=={DLIB_VERSION} source distribution with pip", flush=True)
    fetched = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "dlib", "--require-hashes",
         "--no-build-isolation", "-r", str(requirement), "-d", str(dest)],
        env=child_pip_environment(),
    )
    if fetched.returncode != 0:
        raise RuntimeError(
            f"pip could not fetch dlib {DLIB_VERSION}'s source distribution (exit status {fetched.returncode}; "
            "pip's message is above). Without access to PyPI, give the archive: "
            f"PYFACEDLIB_DLIB_SOURCE=/path/to/dlib-{DLIB_VERSION}.tar.gz pip install . (docs/install.md, Offline)")
    (archive,) = dest.glob(f"dlib-{DLIB_VERSION}.tar.gz")
    verify_sdist(archive)
    return archive


def dlib_source(cache: Path) -> Path:
    """The unpacked dlib source tree: from PYFACEDLIB_DLIB_SOURCE, the cache, or `pip download`.

    Archives (downloaded or given) must match DLIB_SDIST_SHA256; a checked archive is kept in the
    cache beside its tree. An unpacked tree given in PYFACEDLIB_DLIB_SOURCE cannot be checked that
    way: it is used as it is, with a warning.
    """
    cache.mkdir(parents=True, exist_ok=True)
    given = os.environ.get("PYFACEDLIB_DLIB_SOURCE")
    tree = cache / f"dlib-{DLIB_VERSION}"
    if given:
        path = Path(given).expanduser().resolve()
        if (path / "dlib" / "CMakeLists.txt").exists():
            print(f"pyfacedlib: WARNING: building from the unpacked tree {path}, which cannot be checked "
                  "against the pinned sha256 (give the .tar.gz to have it checked)", flush=True)
            return path
        if path.is_file():
            verify_sdist(path)
            return _unpack_sdist(path, tree)
        raise RuntimeError(f"PYFACEDLIB_DLIB_SOURCE={given} is neither a dlib source tree nor an sdist")
    stamp = tree / VERIFIED_STAMP
    if (tree / "dlib" / "CMakeLists.txt").exists() and stamp.exists() and stamp.read_text() == DLIB_SDIST_SHA256:
        return tree
    kept = cache / f"dlib-{DLIB_VERSION}.tar.gz"
    if kept.exists() and file_sha256(kept) == DLIB_SDIST_SHA256:
        return _unpack_sdist(kept, tree)
    with tempfile.TemporaryDirectory(dir=cache) as download:
        archive = download_sdist(Path(download))
        shutil.copyfile(archive, kept.with_suffix(".tmp"))
        os.replace(kept.with_suffix(".tmp"), kept)
        return _unpack_sdist(kept, tree)


def blas_library() -> Path:
    """libscipy_openblas.so from the scipy-openblas32 wheel (a build requirement)."""
    import scipy_openblas32

    lib = Path(scipy_openblas32.get_lib_dir()) / f"lib{scipy_openblas32.get_library()}.so"
    if not lib.exists():
        raise RuntimeError(f"scipy-openblas32 is installed but {lib} is missing")
    return lib


def cudnn_root() -> str | None:
    """The cuDNN of an nvidia-cudnn-cu13 (or -cu12) wheel, when one is installed."""
    try:
        import nvidia.cudnn  # type: ignore[import-not-found]
    except ImportError:
        return None
    return str(Path(list(nvidia.cudnn.__path__)[0]))


def cuda_wheel_prefixes() -> list[Path]:
    """The nvidia-* wheels' prefixes holding include/ and lib/ (nvidia/cu13, nvidia/cudnn)."""
    try:
        import nvidia  # type: ignore[import-not-found]
    except ImportError:
        return []
    return [Path(location) / name for location in nvidia.__path__ for name in ("cu13", "cudnn")
            if (Path(location) / name / "lib").is_dir()]


def stable_cuda_headers(cache: Path, prefixes: list[Path]) -> list[str]:
    """The wheels' include folders, copied under build/_deps (like stable_pybind11: pip's build
    environment changes path every run, and include paths that change would recompile dlib's CUDA
    sources on every install)."""
    stable = []
    for prefix in prefixes:
        source, copy = prefix / "include", cache / "cuda-headers" / prefix.name / "include"
        listing = sorted((str(p.relative_to(source)), p.stat().st_size) for p in source.rglob("*") if p.is_file())
        stamp = copy.parent / "listing.txt"
        if not stamp.exists() or stamp.read_text() != repr(listing):
            shutil.rmtree(copy.parent, ignore_errors=True)
            shutil.copytree(source, copy)
            stamp.write_text(repr(listing))
        stable.append(str(copy))
    return stable


def cuda_requested() -> bool:
    """Whether this build also makes _core_cuda (PYFACEDLIB_CUDA; AUTO asks nvcc and the wheels)."""
    setting = cuda_setting()
    if setting != "AUTO":
        return setting == "ON"
    found = bool(shutil.which("nvcc")) and cudnn_root() is not None and any(
        p.name == "cu13" for p in cuda_wheel_prefixes())
    print(f"pyfacedlib: PYFACEDLIB_CUDA=AUTO: {'building' if found else 'not building'} the CUDA module "
          f"(nvcc {'found' if shutil.which('nvcc') else 'missing'}, cuDNN wheel "
          f"{'found' if cudnn_root() else 'missing'})", flush=True)
    return found


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


def stable_pybind11(cache: Path) -> str:
    """pybind11's CMake directory, from a copy under build/_deps.

    Under `pip install .` pybind11 lives in pip's temporary build environment, which pip deletes
    afterwards and which has another path on every run: pointing the persistent CMake cache at it
    would break the next build, and a changing include path would recompile every file.
    """
    import pybind11

    package = Path(pybind11.__file__).resolve().parent
    cache.mkdir(parents=True, exist_ok=True)
    copy = cache / f"pybind11-{pybind11.__version__}"
    if not (copy / "share" / "cmake" / "pybind11").is_dir():
        tmp = Path(tempfile.mkdtemp(dir=cache))
        shutil.copytree(package, tmp / "pybind11", ignore=shutil.ignore_patterns("__pycache__"))
        if copy.exists():
            shutil.rmtree(copy)
        (tmp / "pybind11").rename(copy)
        shutil.rmtree(tmp)
    return str(copy / "share" / "cmake" / "pybind11")


def build_tools(build_dir: Path) -> list[str]:
    """CMake arguments naming the build tools of *this* run, every run.

    The CMake cache remembers tool paths (the make program, the compiler launcher). pip runs the
    build with tools from a temporary environment that is gone by the next `pip install .`, so
    the paths are passed again each time (an empty launcher when there is no ccache), and a cache
    made with another generator than the one available now is discarded.
    """
    ninja = shutil.which("ninja")
    generator = "Ninja" if ninja else "Unix Makefiles"
    cache_file = build_dir / "CMakeCache.txt"
    if cache_file.exists():
        recorded = next((line.split("=", 1)[1].strip() for line in cache_file.read_text().splitlines()
                         if line.startswith("CMAKE_GENERATOR:")), generator)
        if recorded != generator:
            print(f"pyfacedlib: the build directory was made with {recorded}; starting it over with {generator}",
                  flush=True)
            cache_file.unlink()
            shutil.rmtree(build_dir / "CMakeFiles", ignore_errors=True)
    args = [f"-G{generator}"]
    if ninja:
        args.append(f"-DCMAKE_MAKE_PROGRAM={ninja}")
    ccache = shutil.which("ccache") or ""
    args += [f"-DCMAKE_CXX_COMPILER_LAUNCHER={ccache}", f"-DCMAKE_C_COMPILER_LAUNCHER={ccache}"]
    return args


def engine_arguments(deps: Path) -> list[str]:
    """CMake arguments every configuration of the engine (dlib + our C++ without Python) shares."""
    native = os.environ.get("PYFACEDLIB_NATIVE", "0").lower() in ("1", "on", "true", "yes")
    return [
        f"-DDLIB_SOURCE_DIR={dlib_source(deps)}",
        f"-DPYFACEDLIB_DLIB_VERSION={DLIB_VERSION}",
        f"-DPYFACEDLIB_BLAS_LIBRARY={blas_library()}",
        f"-DPYFACEDLIB_NATIVE={'ON' if native else 'OFF'}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]


def build_engine(build_dir: Path) -> Path:
    """Builds the engine alone (no Python, no CUDA) in build_dir, for module builds that link it.

    Wheel builds (.ci/build-wheels) call this once, then build one module per Python with
    PYFACEDLIB_ENGINE_DIR=build_dir. Returns build_dir.
    """
    build_dir = build_dir.resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    args = [*engine_arguments(ROOT / "build" / "_deps"), "-DPYFACEDLIB_ENGINE_ONLY=ON", "-DPYFACEDLIB_CUDA=OFF",
            *build_tools(build_dir)]
    run_cmake(build_dir, args, target="pfd_engine")
    return build_dir


def run_cmake(build_dir: Path, args: list[str], target: str) -> None:
    """Configures ROOT in build_dir with args and builds target."""
    # ccache: paths under the checkout hashed relative to it, so another clone reuses the cache
    env = {**os.environ, "CCACHE_BASEDIR": str(ROOT)}
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build_dir), *args], check=True, env=env)
    jobs = os.environ.get("PYFACEDLIB_JOBS", str(os.cpu_count() or 2))
    subprocess.run(["cmake", "--build", str(build_dir), "--target", target, "-j", jobs], check=True, env=env)


class CMakeBuild(build_ext):
    def build_extension(self, ext: Extension) -> None:
        build_dir = Path(os.environ.get("PYFACEDLIB_BUILD_DIR", ROOT / "build" / "cmake")).resolve()
        deps = ROOT / "build" / "_deps"
        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        python = [f"-Dpybind11_DIR={stable_pybind11(deps)}", f"-DPython_EXECUTABLE={sys.executable}"]
        engine_dir = os.environ.get("PYFACEDLIB_ENGINE_DIR")
        if engine_dir:
            # the module alone, over an engine built once by build_engine (CPU only)
            engine = Path(engine_dir).resolve()
            self._build_module("_core", build_dir, [*python, f"-DPYFACEDLIB_ENGINE_DIR={engine}",
                                                    "-DCMAKE_BUILD_TYPE=Release"], out_dir, engine / "lib")
            self._remove_cuda_modules(out_dir)
            return
        common = [*engine_arguments(deps), *python]
        # the CPU module always; its dlib never uses CUDA, so it runs on every machine
        self._build_module("_core", build_dir, [*common, "-DPYFACEDLIB_CUDA=OFF"], out_dir, build_dir / "lib")
        if cuda_requested():
            prefixes = cuda_wheel_prefixes()
            cuda = [*common, "-DPYFACEDLIB_CUDA=ON",
                    f"-DPYFACEDLIB_CUDA_INCLUDE_DIRS={';'.join(stable_cuda_headers(deps, prefixes))}",
                    f"-DPYFACEDLIB_CUDA_LIBRARY_DIRS={';'.join(str(p / 'lib') for p in prefixes)}"]
            cuda_dir = Path(f"{build_dir}-cuda")
            self._build_module("_core_cuda", cuda_dir, cuda, out_dir, cuda_dir / "lib")
        else:
            self._remove_cuda_modules(out_dir)

    @staticmethod
    def _remove_cuda_modules(out_dir: Path) -> None:
        """A CUDA module left by an earlier build would not match this build's _core."""
        for old in out_dir.glob("_core_cuda*.so"):
            print(f"pyfacedlib: removing {old} (this build has no CUDA module)", flush=True)
            old.unlink()

    def copy_extensions_to_source(self) -> None:
        """In-place builds: also the files setuptools does not know of (the AVX2 HOG kernels, the
        CUDA module), and no CUDA module left from an earlier build that this one did not make."""
        super().copy_extensions_to_source()
        built = Path(self.build_lib) / "pyfacedlib"
        source = Path(self.get_finalized_command("build_py").get_package_dir("pyfacedlib"))
        extras = {p.name for p in built.glob("_core*.so") if p.name.startswith("_core_cuda") or "_hog_" in p.name}
        for old in source.glob("_core_cuda*.so"):
            if old.name not in extras:
                old.unlink()
        for name in extras:
            shutil.copy2(built / name, source / (name + ".tmp"))
            os.replace(source / (name + ".tmp"), source / name)

    @staticmethod
    def _build_module(name: str, build_dir: Path, args: list[str], out_dir: Path, engine_lib: Path) -> None:
        """Configures and builds one variant of the extension in build_dir, then copies it and its
        engine's AVX2 HOG module (from engine_lib) to out_dir."""
        build_dir.mkdir(parents=True, exist_ok=True)
        args = [*args, f"-DPFD_MODULE_NAME={name}", f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={build_dir / 'lib'}",
                *build_tools(build_dir)]
        run_cmake(build_dir, args, target="_core")
        (module,) = (build_dir / "lib").glob(f"{name}.*so")
        out_dir.mkdir(parents=True, exist_ok=True)
        avx2_kernel = engine_lib / f"{name}_hog_avx2.so"   # x86 builds only
        for built in (module, avx2_kernel) if avx2_kernel.exists() else (module,):
            tmp = out_dir / (built.name + ".tmp")
            shutil.copy2(built, tmp)
            os.replace(tmp, out_dir / built.name)


if __name__ == "__main__":   # setuptools runs this file as __main__; benchmarks/gpu_gather.py imports the pins
    setup(ext_modules=[CMakeExtension("pyfacedlib._core")],
          cmdclass={"build_ext": CMakeBuild, "build_py": BuildPyWithManifest})
