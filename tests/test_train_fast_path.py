"""The fast training path (fast_con convolutions; data-parallel replicas for frozen BN) against
dlib's own con_ + dnn_trainer: the same step must give the same parameters."""
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib import datasets
from pyfacedlib._native import core


def _cpu_kernels() -> list[str] | None:
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


# the kernels the tests run on: the CPU's own list (so a broken CPU check in the extension cannot
# leave a direct kernel untested), build_info's where /proc/cpuinfo is missing
CPU_KERNELS = _cpu_kernels()
KERNELS = CPU_KERNELS if CPU_KERNELS is not None else pfd.build_info()["conv_kernels"]


def test_conv_kernels_are_the_cpus():
    """build_info lists exactly the direct kernels /proc/cpuinfo says this CPU runs (a CPU check that
    lost one would otherwise only skip its tests)."""
    if CPU_KERNELS is None:
        pytest.skip("no /proc/cpuinfo")
    assert pfd.build_info()["conv_kernels"] == CPU_KERNELS


@pytest.fixture(params=KERNELS)
def training_kernel(request):
    """Runs the test with the training nets' convolutions on each kernel this CPU runs."""
    core.set_training_conv_kernel(request.param)
    assert core.training_conv_kernel() == request.param
    yield request.param
    core.set_training_conv_kernel("auto")


@pytest.fixture(scope="module")
def hard_johns(johns):
    """The johns chips at 10 px: the shipped model no longer separates them, so the loss is non-zero."""
    chips, labels = johns
    names = sorted(set(labels))
    return datasets.degrade(chips, "lowres:10"), [names.index(n) for n in labels]


def _trainer(base, train_bn, chips, labels, threads, fast, augment=False, strategy="all", level=0, stop_backprop=True):
    return core.FaceTrainer(base, train_bn, chips, labels, level, 1e-3, 5, 5, augment, 1, 0, threads, fast,
                            stop_backprop)


# The two paths sum the same gradients in different orders (per-sample GEMMs in one net vs several
# samples per GEMM over replicas). On a machine where OpenBLAS picks its Haswell kernel the
# input-side convolutions (tens of thousands of terms per weight) then differ by up to 0.2% of their
# step (measured 1.8e-3 at layer 122, <= 9e-4 elsewhere); a wrong gradient would differ by ~100%.
def _assert_same_parameters(a, b, start, rtol=5e-3):
    start, a, b = dict(start), dict(a), dict(b)
    moved = 0
    for index, before in start.items():
        if before.size == 0:
            continue
        step_a, step_b = a[index] - before, b[index] - before
        scale = max(np.abs(step_a).max(), 1e-12)
        # plus two float32 steps of the parameters' own resolution (a step of 1e-6 on a weight of 0.5
        # is only ~30 representable values: one rounding differs by 3e-8)
        ulp = float(np.spacing(np.abs(before).max().astype(np.float32)))
        assert np.abs(step_a - step_b).max() <= rtol * scale + 2 * ulp, f"layer {index}"
        moved += scale > 1e-12
    return moved


def test_training_kernel_default_and_errors():
    assert core.training_conv_kernel() == KERNELS[0]
    with pytest.raises(ValueError, match="conv_kernel"):
        core.set_training_conv_kernel("winograd")
    assert core.training_conv_kernel() == KERNELS[0]


def test_direct_training_kernels_really_run(hard_johns):
    """A step on a direct kernel sums in another order than im2col + GEMM: the same step within
    summation order, but not bit for bit (a setting that silently fell back to blas would be)."""
    chips, labels = hard_johns
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    after = {}
    try:
        for kernel in KERNELS:
            core.set_training_conv_kernel(kernel)
            trainer = _trainer(base, False, chips, labels, 2, True)
            start = trainer.parameters()
            trainer.train(1)
            after[kernel] = trainer.parameters()
    finally:
        core.set_training_conv_kernel("auto")
    blas = dict(after["blas"])
    for kernel in KERNELS[:-1]:
        _assert_same_parameters(after[kernel], after["blas"], start)
        assert any(not np.array_equal(p, blas[i]) for i, p in dict(after[kernel]).items()), kernel


@pytest.mark.parametrize("threads", [1, 2])
def test_frozen_bn_step_matches_dnn_trainer(hard_johns, threads, training_kernel):
    chips, labels = hard_johns
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    reference, fast = (_trainer(base, False, chips, labels, 2, False),
                       _trainer(base, False, chips, labels, threads, True))
    start = fast.parameters()
    loss_ref, loss_fast = reference.train(1), fast.train(1)
    assert loss_ref > 0.01 and loss_fast == pytest.approx(loss_ref, rel=1e-5)
    moved = _assert_same_parameters(reference.parameters(), fast.parameters(), start)
    assert moved == 30  # 29 convolutions + the fc head all learned


@pytest.mark.parametrize("level", [1, 3])
def test_from_level_step_stops_back_propagation_with_dlibs_result(hard_johns, level):
    """from_level:K on the fast path computes no gradients below level K: the same step as dlib's
    dnn_trainer (which back-propagates through every frozen level), frozen levels unchanged."""
    chips, labels = hard_johns
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    reference = _trainer(base, False, chips, labels, 2, False, level=level)
    stopped = _trainer(base, False, chips, labels, 2, True, level=level)
    start = stopped.parameters()
    assert stopped.train(1) == pytest.approx(reference.train(1), rel=1e-5)
    moved = _assert_same_parameters(reference.parameters(), stopped.parameters(), start)
    assert 0 < moved < 30
    start, after = dict(start), dict(stopped.parameters())
    frozen = [i for i, before in start.items() if before.size and np.array_equal(before, after[i])]
    assert len(frozen) == sum(1 for before in start.values() if before.size) - moved


def test_calibrated_bn_step_matches_dnn_trainer(hard_johns, tmp_path, training_kernel):
    chips, labels = hard_johns
    bn = tmp_path / "bn.dat"
    pfd.convert_affine_to_bn(pfd.models.path("dlib_face_recognition_resnet_model_v1"), bn, calibration=chips)
    reference, fast = _trainer(str(bn), True, chips, labels, 2, False), _trainer(str(bn), True, chips, labels, 2, True)
    start = fast.parameters()
    assert fast.train(1) == pytest.approx(reference.train(1), rel=1e-5)
    _assert_same_parameters(reference.parameters(), fast.parameters(), start)
    # the trained bn net serializes as plain con_ records: it loads as dlib's own bn net, and folding
    # it gives the trainer's own affine export
    (tmp_path / "trained_bn.dat").write_bytes(fast.bn_bytes())
    (tmp_path / "trained_affine.dat").write_bytes(fast.affine_bytes())
    assert core.net_kind(str(tmp_path / "trained_bn.dat")) == "bn"
    pfd.convert_bn_to_affine(tmp_path / "trained_bn.dat", tmp_path / "folded.dat")
    a = pfd.FaceEmbedder(tmp_path / "folded.dat").embed_chips(chips[:5])
    b = pfd.FaceEmbedder(tmp_path / "trained_affine.dat").embed_chips(chips[:5])
    assert np.abs(a - b).max() <= 1e-5


def test_data_parallel_results_do_not_depend_on_threads(hard_johns):
    chips, labels = hard_johns
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    one = _trainer(base, False, chips, labels, 1, True, augment=True, strategy="from_level:2", level=2)
    two = _trainer(base, False, chips, labels, 2, True, augment=True, strategy="from_level:2", level=2)
    start = one.parameters()
    assert one.train(3) == pytest.approx(two.train(3), rel=1e-5)
    _assert_same_parameters(one.parameters(), two.parameters(), start)


def test_fast_path_checkpoint_round_trip(hard_johns):
    chips, labels = hard_johns
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    a = _trainer(base, False, chips, labels, 2, True)
    a.train(2)
    state = a.checkpoint()
    b = _trainer(base, False, chips, labels, 2, True)
    b.restore(state)
    assert b.step == 2
    a.train(1), b.train(1)
    pa, pb = dict(a.parameters()), dict(b.parameters())
    assert pa.keys() == pb.keys() and all(np.array_equal(pa[i], pb[i]) for i in pa)


def test_more_threads_than_faces_in_a_batch(hard_johns):
    # 2 identities x 2 images = 4 faces a step on 8 threads: idle replicas must not break the step
    chips, labels = hard_johns
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    many = core.FaceTrainer(base, False, chips, labels, 0, 1e-3, 2, 2, False, 1, 0, 8, True)
    few = core.FaceTrainer(base, False, chips, labels, 0, 1e-3, 2, 2, False, 1, 0, 1, True)
    start = few.parameters()
    assert many.train(2) == pytest.approx(few.train(2), rel=1e-5)
    _assert_same_parameters(few.parameters(), many.parameters(), start)
