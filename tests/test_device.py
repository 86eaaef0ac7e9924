"""Choosing the device: explicit, visible, and a clear error where there is no GPU.

CI builds the CPU module only; the last test runs where a CUDA module is installed (a CUDA build on
a machine without a GPU must still import, embed on the CPU and name why it cannot use the GPU).
"""
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib._native import cuda_module, cuda_status

ROOT = Path(__file__).resolve().parents[1]
HAS_CUDA_MODULE = cuda_module() is not None


def test_build_info_says_where_embedding_runs():
    info = pfd.build_info()
    for key in ("cuda", "cuda_version", "cudnn_version", "cuda_driver", "cuda_devices", "cuda_detail",
                "default_device"):
        assert key in info
    assert info["default_device"] in ("cpu", "cuda")
    if not info["cuda"]:
        assert info["cuda_devices"] == [] and info["default_device"] == "cpu"
        assert "without CUDA" in info["cuda_detail"]


def test_cpu_module_reports_no_cuda_runtime():
    status = pfd._core.cuda_runtime()
    assert status["built_with_cuda"] is False and status["devices"] == []
    assert "without CUDA" in status["device_error"]


def test_device_cpu_and_auto_embed(johns):
    cpu = pfd.FaceEmbedder(device="cpu")
    assert cpu.device == "cpu" and cpu.backend == "folded"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # a CUDA module without a GPU warns on "auto"
        auto = pfd.FaceEmbedder(device="auto")
    assert auto.device == pfd.build_info()["default_device"]
    chips = johns[0][:4]
    np.testing.assert_allclose(auto.embed_chips(chips), cpu.embed_chips(chips), atol=1e-4)


@pytest.mark.skipif(HAS_CUDA_MODULE and bool(cuda_status()["devices"]), reason="a GPU is here: device='cuda' works")
def test_device_cuda_without_gpu_is_a_clear_error():
    with pytest.raises(pfd.DeviceError, match="device='cuda'"):
        pfd.FaceEmbedder(device="cuda")


def test_auto_warns_when_an_installed_cuda_module_cannot_load(monkeypatch):
    """device="auto" falls back to the CPU when the CUDA module fails to load, but never silently."""
    from pyfacedlib import _native
    from pyfacedlib.errors import DeviceError

    def fails():
        raise ImportError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.setattr(_native, "_cuda", {})                 # forget the module found (or not) so far
    monkeypatch.setattr(_native, "_cuda_installed", lambda: True)
    monkeypatch.setattr(_native, "_load_cuda", fails)
    with pytest.warns(RuntimeWarning, match="cannot load: libcudnn.so.9"):
        assert _native.resolve_device("auto")[0] == "cpu"
    with pytest.raises(DeviceError, match="libcudnn.so.9"):
        _native.resolve_device("cuda")
    monkeypatch.setattr(_native, "_cuda", {})
    monkeypatch.setattr(_native, "_cuda_installed", lambda: False)  # a CPU-only build: quietly the CPU
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _native.resolve_device("auto")[0] == "cpu"


def test_unknown_device_is_rejected():
    with pytest.raises(ValueError, match="device must be one of"):
        pfd.FaceEmbedder(device="gpu")
    with pytest.raises(ValueError, match="device must be one of"):
        pfd.FinetuneConfig(device="tpu")


def test_cli_info_prints_the_device(capsys):
    from pyfacedlib.cli import main

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "default_device" in out and "cuda_detail" in out and "hog_kernel" in out


def test_cuda_build_requirements_are_the_cuda_extra():
    """The build backend asks for the same CUDA wheels the `cuda` extra installs (one list each way)."""
    sys.path.insert(0, str(ROOT / "build_backend"))
    try:
        import pyfacedlib_build
    finally:
        sys.path.pop(0)
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python >= 3.11's tomllib")
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["cuda"]
    assert set(pyfacedlib_build.CUDA_BUILD_REQUIRES) <= set(extra)
    assert {r.split(">")[0] for r in extra} - {r.split(">")[0] for r in pyfacedlib_build.CUDA_BUILD_REQUIRES} == {
        "nvidia-cuda-runtime"}


@pytest.mark.skipif(not HAS_CUDA_MODULE, reason="no CUDA module: this installation is the CPU build "
                                                  "(PYFACEDLIB_CUDA=ON pip install '.[cuda]' makes one)")
def test_cuda_module_loads_and_names_its_versions():
    status = cuda_status()
    assert status["built"] and status["runtime_version"].startswith("13.") and status["cudnn_version"].startswith("9.")
    if not status["devices"]:
        assert status["device_error"], "0 devices must come with the runtime's reason"
        with pytest.warns(RuntimeWarning, match="found no GPU"):
            assert pfd.FaceEmbedder(device="auto").device == "cpu"
