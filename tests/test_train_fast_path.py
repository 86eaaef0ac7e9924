"""The fast training path (fast_con convolutions; data-parallel replicas for frozen BN) against
dlib's own con_ + dnn_trainer: the same step must give the same parameters."""

import numpy as np
import pytest
from conftest import kernels_to_test

import pyfacedlib as pfd
from pyfacedlib import datasets
from pyfacedlib._native import core

KERNELS = kernels_to_test()  # the kernels this CPU runs, from /proc/cpuinfo


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


# Convolutions per fine-tuning level, read off cpp/face_net.h: the stem's 7x7; dlib's level4 (3
# res<32>: 2 each); level3 (3 res<64> + res_down<64>); level2 and level1 (2 res + res_down); level0
# (res_down<256>). The head (level 6) is fc_no_bias<128>.
CONVS_PER_LEVEL = [1, 6, 8, 6, 6, 2]


def _expected_counts(first_level: int, passes: int, stop_backprop: bool = True) -> list[int]:
    """backward_counts of `passes` backward passes: every convolution of a trained level computes a
    gradient on each; a frozen one computes none when back-propagation stops below first_level (and
    its data gradient when it does not)."""
    return [convs * passes if level >= first_level or not stop_backprop else 0
            for level, convs in enumerate(CONVS_PER_LEVEL)] + [passes]


@pytest.mark.parametrize("strategy", ["all", "from_level:2", "from_level:4"])
def test_from_level_computes_no_gradients_below_level_k(hard_johns, strategy):
    """The trainer's own count of convolution backward passes that computed a gradient, per level:
    from_level:K (parsed as finetune parses it) computes none below K and every one from K up; "all"
    computes them everywhere. The counts are per train() call. The control (stop_backprop=False:
    dlib's way, data gradients through the frozen levels) shows the same counters seeing that work,
    so they observe computation, not the freezing settings."""
    from pyfacedlib._finetune import parse_strategy

    chips, labels = hard_johns
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    level = parse_strategy(strategy)[1]
    assert core.NUM_LEVELS == len(CONVS_PER_LEVEL) + 1
    trainer = _trainer(base, False, chips, labels, 2, True, level=level)  # 2 replicas: 2 passes a step
    assert trainer.backward_counts == [0] * core.NUM_LEVELS
    trainer.train(1)
    assert trainer.backward_counts == _expected_counts(level, 2)
    trainer.train(2)
    assert trainer.backward_counts == _expected_counts(level, 4)  # this call's, not the total
    if level > 0:
        control = _trainer(base, False, chips, labels, 1, True, level=level, stop_backprop=False)
        control.train(1)
        assert control.backward_counts == _expected_counts(level, 1, stop_backprop=False)


def test_calibrated_bn_from_level_computes_no_gradients_below_level_k(hard_johns, tmp_path):
    """The same through dnn_trainer (calibrated batch norm, one net: one pass a step); dlib's con_
    (the reference path) does not count."""
    chips, labels = hard_johns
    bn = tmp_path / "bn.dat"
    pfd.convert_affine_to_bn(pfd.models.path("dlib_face_recognition_resnet_model_v1"), bn, calibration=chips)
    trainer = _trainer(str(bn), True, chips, labels, 2, True, level=3)
    trainer.train(2)
    assert trainer.backward_counts == _expected_counts(3, 2)
    assert _trainer(str(bn), True, chips, labels, 2, False, level=3).backward_counts == []


def test_head_strategy_back_propagates_through_the_head_only(hard_johns):
    chips, labels = hard_johns
    base = pfd.models.path("dlib_face_recognition_resnet_model_v1")
    trainer = _trainer(base, False, chips, labels, 2, True, level=core.NUM_LEVELS - 1)
    trainer.train(3)
    assert trainer.backward_counts == [0] * (core.NUM_LEVELS - 1) + [3]
