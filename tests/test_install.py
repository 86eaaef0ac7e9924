"""The build's own steps that a fresh machine depends on: fetching dlib's sdist from inside pip's
build (no leaked backend settings, hash before code) and building offline from a given sdist.

These call setup.py's functions directly (the repository's setup.py, beside tests/), offline:
pip reads the archive from a local folder (PIP_NO_INDEX + PIP_FIND_LINKS).
"""
from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_module_():
    """setup.py imported as a module (its setup() call runs only as __main__)."""
    path = ROOT / "setup.py"
    if not path.exists():
        pytest.fail(f"{path} is missing: run the tests from a checkout (or a copy of it)")
    spec = importlib.util.spec_from_file_location("pyfacedlib_setup", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dlib_folder(setup_module_, tmp_path_factory):
    """A folder holding only the pinned dlib sdist: the one the build kept, or a fresh download."""
    folder = tmp_path_factory.mktemp("find-links")
    kept = ROOT / "build" / "_deps" / f"dlib-{setup_module_.DLIB_VERSION}.tar.gz"
    target = folder / kept.name
    if kept.exists():
        target.write_bytes(kept.read_bytes())
    else:   # tests run outside a built checkout: fetch it (hash-checked) the way the build does
        archive = setup_module_.download_sdist(tmp_path_factory.mktemp("download"))
        target.write_bytes(archive.read_bytes())
    setup_module_.verify_sdist(target)
    return folder


def leaked_build_environment(monkeypatch, find_links: Path) -> None:
    """The variables pip sets while it runs *our* backend, as a nested pip would inherit them;
    and pip pointed at a local folder only."""
    monkeypatch.setenv("_PYPROJECT_HOOKS_BUILD_BACKEND", "pyfacedlib_build")
    monkeypatch.setenv("_PYPROJECT_HOOKS_BACKEND_PATH", str(ROOT / "build_backend"))           # pip <= 25
    monkeypatch.setenv("_PYPROJECT_HOOKS_BACKEND_PATH_JSON", json.dumps([str(ROOT / "build_backend")]))   # pip 26
    monkeypatch.setenv("PEP517_BUILD_BACKEND", "pyfacedlib_build")
    monkeypatch.setenv("PEP517_BACKEND_PATH", str(ROOT / "build_backend"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(find_links))
    monkeypatch.setenv("PIP_DISABLE_PIP_VERSION_CHECK", "1")


def pip_version() -> tuple[int, ...]:
    import pip

    return tuple(int(part) for part in pip.__version__.split(".")[:2] if part.isdigit())


def test_the_dlib_download_ignores_the_outer_backend(setup_module_, dlib_folder, monkeypatch, tmp_path):
    leaked_build_environment(monkeypatch, dlib_folder)
    archive = setup_module_.download_sdist(tmp_path / "download")
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == setup_module_.DLIB_SDIST_SHA256
    environment = setup_module_.child_pip_environment()
    assert not [name for name in environment if name.startswith(("_PYPROJECT_HOOKS_", "PEP517_"))]
    assert environment["PIP_FIND_LINKS"] == str(dlib_folder), "the user's pip settings must still apply"


def test_this_pip_would_fail_with_the_leaked_settings(dlib_folder, monkeypatch, tmp_path):
    """The failure the test above guards against is real with the pip these tests run. (Under
    `pip install .` the inner pip is the build environment's newest pip, which reads
    `_PYPROJECT_HOOKS_BACKEND_PATH_JSON`; an outer pip 23 sets `_PYPROJECT_HOOKS_BACKEND_PATH`
    instead, so the leak showed only with a current outer pip.)"""
    leaked_build_environment(monkeypatch, dlib_folder)
    result = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", "dlib", "--no-build-isolation",
         "dlib==20.0.1", "-d", str(tmp_path)], capture_output=True, text=True)
    if result.returncode == 0:
        message = f"pip {'.'.join(map(str, pip_version()))} does not read a leaked backend path"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI runs the current pip, which does")
        pytest.skip(message)
    output = result.stdout + result.stderr
    # pip 26: "Cannot find module 'setuptools.build_meta' in ['…/build_backend']";
    # pip 23 (reading the older variable): "Backend was not loaded from backend-path"
    assert "build_backend" in output or "backend-path" in output, output[-2000:]


def fake_dlib_sdist(folder: Path, marker: Path) -> Path:
    """An archive named like dlib's sdist whose setup.py would write `marker` if it ever ran."""
    files = {
        "dlib-20.0.1/setup.py": f"open({str(marker)!r}, 'w').write('ran')\nfrom setuptools import setup\nsetup()\n",
        "dlib-20.0.1/PKG-INFO": "Metadata-Version: 2.1\nName: dlib\nVersion: 20.0.1\n",
    }
    archive = folder / "dlib-20.0.1.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def test_a_wrong_archive_is_refused_before_any_of_its_code_runs(setup_module_, monkeypatch, tmp_path):
    folder = tmp_path / "links"
    folder.mkdir()
    marker = tmp_path / "setup-py-ran"
    fake_dlib_sdist(folder, marker)
    leaked_build_environment(monkeypatch, folder)
    with pytest.raises(RuntimeError, match="could not fetch dlib 20.0.1's source distribution"):
        setup_module_.download_sdist(tmp_path / "download")
    assert not marker.exists(), "the archive's setup.py ran before its hash was compared"


def test_no_dlib_anywhere_says_how_to_build_offline(setup_module_, monkeypatch, tmp_path):
    empty = tmp_path / "links"
    empty.mkdir()
    leaked_build_environment(monkeypatch, empty)
    with pytest.raises(RuntimeError, match="PYFACEDLIB_DLIB_SOURCE=/path/to/dlib-20.0.1.tar.gz"):
        setup_module_.download_sdist(tmp_path / "download")


def test_a_given_sdist_builds_on_a_fresh_clone(setup_module_, dlib_folder, monkeypatch, tmp_path):
    """PYFACEDLIB_DLIB_SOURCE as a .tar.gz or an unpacked tree, with no build/_deps yet."""
    cache = tmp_path / "fresh-clone" / "build" / "_deps"
    archive = dlib_folder / "dlib-20.0.1.tar.gz"
    monkeypatch.setenv("PYFACEDLIB_DLIB_SOURCE", str(archive))
    tree = setup_module_.dlib_source(cache)
    assert (tree / "dlib" / "CMakeLists.txt").exists()
    assert Path(setup_module_.stable_pybind11(tmp_path / "other-fresh" / "_deps")).is_dir()
    monkeypatch.setenv("PYFACEDLIB_DLIB_SOURCE", str(tree))
    assert setup_module_.dlib_source(tmp_path / "third" / "_deps") == tree.resolve()


def test_a_tampered_sdist_is_refused(setup_module_, monkeypatch, tmp_path):
    archive = fake_dlib_sdist(tmp_path, tmp_path / "unused")
    monkeypatch.setenv("PYFACEDLIB_DLIB_SOURCE", str(archive))
    with pytest.raises(RuntimeError, match="not the pinned dlib"):
        setup_module_.dlib_source(tmp_path / "_deps")


def test_the_sdist_carries_everything_the_build_reads(tmp_path):
    """`python -m build --sdist` (setuptools alone makes an sdist: the other build requirements are
    not checked) packs every C++ source, CMake file, the build backend and the
    model manifest (an sdist without them cannot build); installing one is checked in docs/install.md."""
    if importlib.util.find_spec("build") is None:
        skip_or_fail("the 'build' package (a test dependency) is not installed")
    needed = [path for pattern in ("cpp/*", "cmake/*.cmake", "build_backend/*.py")
              for path in ROOT.glob(pattern) if path.is_file()]
    needed += [ROOT / name for name in ("CMakeLists.txt", "models/manifest.json", "pyproject.toml", "setup.py",
                                         "README.md", "pyfacedlib/__init__.py", "pyfacedlib/_core.pyi")]
    result = subprocess.run([sys.executable, "-m", "build", "--sdist", "--no-isolation", "--skip-dependency-check",
                             "--outdir", str(tmp_path), str(ROOT)], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (sdist,) = tmp_path.glob("pyfacedlib-*.tar.gz")
    with tarfile.open(sdist) as tar:
        packed = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    missing = sorted(str(path.relative_to(ROOT)) for path in needed if str(path.relative_to(ROOT)) not in packed)
    assert not missing, f"the sdist lacks {missing}"
    assert not [name for name in packed if name.endswith(".so") or name.startswith("build/")]
