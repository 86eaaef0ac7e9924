"""The folded CPU forward pass (affine folded into convolutions; direct SIMD or im2col + GEMM
convolutions) against dlib's own, with every convolution kernel this CPU runs."""

import numpy as np
import pytest
from conftest import CPU_KERNELS, kernels_to_test

import pyfacedlib as pfd

KERNELS = kernels_to_test()  # the kernels this CPU runs, from /proc/cpuinfo


def test_conv_kernels_are_the_cpus():
    """build_info lists exactly the direct kernels /proc/cpuinfo says this CPU runs (a CPU check that
    lost one would otherwise only skip its tests)."""
    if CPU_KERNELS is None:
        pytest.skip("no /proc/cpuinfo")
    assert pfd.build_info()["conv_kernels"] == CPU_KERNELS


@pytest.fixture(scope="module")
def reference():
    return pfd.FaceEmbedder(threads=2, backend="dlib")


@pytest.fixture(scope="module")
def both(reference):
    return pfd.FaceEmbedder(threads=2), reference


@pytest.fixture(scope="module", params=KERNELS)
def with_kernel(request, reference):
    """(folded embedder on one convolution kernel, the dlib reference)."""
    folded = pfd.FaceEmbedder(threads=2, device="cpu")
    folded.backend = "folded"
    folded.conv_kernel = request.param
    assert folded.conv_kernel == request.param
    return folded, reference


def test_folded_is_the_cpu_default_and_matches_dlib_path(johns, both):
    chips, _ = johns
    folded, reference = both
    assert folded.backend == ("dlib" if pfd.build_info()["cuda"] else "folded")
    assert reference.backend == "dlib"
    assert np.abs(folded.embed_chips(chips) - reference.embed_chips(chips)).max() <= 1e-5


def test_every_conv_kernel_matches_dlib_path(johns, with_kernel):
    chips, _ = johns
    folded, reference = with_kernel
    assert np.abs(folded.embed_chips(chips) - reference.embed_chips(chips)).max() <= 1e-5


@pytest.mark.parametrize("count", [1, 7, 8, 9, 23])
def test_batch_edges_and_threads_give_per_face_results(johns, with_kernel, count):
    chips, _ = johns
    folded, reference = with_kernel
    batch = chips[np.arange(count) % len(chips)]
    together = folded.embed_chips(batch)
    folded.threads = 1
    try:
        one_thread = folded.embed_chips(batch)
    finally:
        folded.threads = 2
    alone = np.concatenate([folded.embed_chips(c) for c in batch])
    assert np.abs(together - alone).max() <= 1e-5
    assert np.abs(together - one_thread).max() <= 1e-5
    assert np.abs(together - reference.embed_chips(batch)).max() <= 1e-5


def test_jitter_averages_match_between_backends(johns, both):
    chips, _ = johns
    folded, reference = both
    a = folded.embed_chips(chips[:3], num_jitters=3, seed=5)
    b = reference.embed_chips(chips[:3], num_jitters=3, seed=5)
    assert np.abs(a - b).max() <= 1e-5


def test_unrealistic_inputs_agree_too(with_kernel):
    # saturated, constant and noise chips exercise ReLU fusion, the zero borders and the zero-padded residual additions
    folded, reference = with_kernel
    rng = np.random.default_rng(0)
    chips = np.stack([np.zeros((150, 150, 3), np.uint8), np.full((150, 150, 3), 255, np.uint8),
                      rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)])
    assert np.abs(folded.embed_chips(chips) - reference.embed_chips(chips)).max() <= 1e-4


def test_folded_op_list_and_cost(both):
    folded, _ = both
    ops = folded._core.folded_ops.splitlines()
    assert not any(op.startswith("scale_shift") or op == "relu" for op in ops)  # all folded or fused
    assert sum(op.startswith("conv") for op in ops) == 29  # 1 stem + 14 residual blocks x 2
    assert folded._core.multiply_adds_per_face == pytest.approx(270.85e6, rel=1e-3)


def test_unknown_backend_is_rejected(both):
    folded, _ = both
    with pytest.raises(ValueError, match="backend"):
        folded.backend = "onnx"
    with pytest.raises(ValueError, match="backend"):
        pfd.FaceEmbedder(backend="gpu")


def test_direct_kernels_really_run(johns):
    """The direct kernels sum in another order than im2col + GEMM: their descriptors differ from the
    blas kernel's in the last bits (so a setting that silently fell back to blas would show)."""
    chips, _ = johns
    embedder = pfd.FaceEmbedder(threads=2, backend="folded", device="cpu")
    embedder.conv_kernel = "blas"
    blas = embedder.embed_chips(chips[:5])
    for kernel in KERNELS[:-1]:
        embedder.conv_kernel = kernel
        direct = embedder.embed_chips(chips[:5])
        assert not np.array_equal(direct, blas) and np.abs(direct - blas).max() <= 1e-5, kernel


def test_conv_kernel_default_choice_and_errors(both):
    folded, _ = both
    assert "blas" in KERNELS and KERNELS[-1] == "blas"   # the fastest first; blas runs everywhere
    if not pfd.build_info()["cuda"]:
        assert folded.conv_kernel == KERNELS[0]
    with pytest.raises(ValueError, match="conv_kernel"):
        folded.conv_kernel = "winograd"
    for missing in {"avx512", "avx2"} - set(KERNELS):   # a kernel this CPU cannot run says what it lacks
        with pytest.raises(ValueError, match="lacks"):
            folded.conv_kernel = missing
    folded.conv_kernel = "blas"
    folded.conv_kernel = "auto"
    assert folded.conv_kernel == KERNELS[0]
