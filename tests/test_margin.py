"""Margin losses (CosFace / ArcFace): the C++ class layer and loss against the formulas and finite
differences, every trainer with a margin loss against dlib's dnn_trainer, checkpoints, and
margin-trained exports as dlib drop-ins."""
import json
from pathlib import Path

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib import datasets
from pyfacedlib._native import core

FACE = "dlib_face_recognition_resnet_model_v1"


def _reference_loss(cosines: np.ndarray, labels: np.ndarray, s: float, m_angular: float, m_cosine: float) -> float:
    """insightface's combined margin (m1 = 1) softmax cross-entropy, in float64."""
    c = cosines.astype(np.float64).copy()
    rows = np.arange(len(labels))
    theta = np.arccos(np.clip(c[rows, labels], -1 + 1e-7, 1 - 1e-7))
    c[rows, labels] = np.where(theta + m_angular <= np.pi, np.cos(theta + m_angular),
                               c[rows, labels] - np.sin(np.pi - m_angular) * m_angular) - m_cosine
    z = s * c
    z -= z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[rows, labels]))


@pytest.mark.parametrize("s, m_angular, m_cosine", [(8.0, 0.0, 0.0), (8.8, 0.0, 0.1), (8.8, 0.2, 0.0),
                                                     (30.0, 0.5, 0.0), (16.0, 0.1, 0.05)])
def test_margin_loss_value_and_gradient(s, m_angular, m_cosine):
    rng = np.random.default_rng(1)
    cosines = rng.uniform(-0.9, 0.95, (12, 7)).astype(np.float32)
    labels = rng.integers(0, 7, 12)
    loss = core.MarginLoss(s, m_angular, m_cosine)
    value, gradient = loss.loss_and_gradient(cosines, labels.tolist())
    assert value == pytest.approx(_reference_loss(cosines, labels, s, m_angular, m_cosine), rel=1e-5)
    # central differences of the reference, one cosine at a time
    eps = 1e-4
    numeric = np.zeros_like(gradient, dtype=np.float64)
    for i, j in np.ndindex(cosines.shape):
        up, down = cosines.astype(np.float64), cosines.astype(np.float64)
        up[i, j] += eps
        down[i, j] -= eps
        numeric[i, j] = (_reference_loss(up, labels, s, m_angular, m_cosine)
                         - _reference_loss(down, labels, s, m_angular, m_cosine)) / (2 * eps)
    assert np.abs(gradient - numeric).max() <= 1e-3 * max(1.0, np.abs(numeric).max())


def test_arcface_past_pi_keeps_decreasing():
    """Where theta + m passes pi the target logit continues linearly (no jump back up)."""
    loss = core.MarginLoss(4.0, 0.5, 0.0)
    values = [loss.loss_and_gradient(np.array([[c, 0.0]], np.float32), [0])[0] for c in np.linspace(-0.99, -0.7, 30)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cosine_layer_forward_and_gradients():
    rng = np.random.default_rng(2)
    x = (rng.normal(size=(6, 16)) * 1.4).astype(np.float32)
    w = rng.normal(size=(5, 16)).astype(np.float32)
    g = rng.normal(size=(6, 5)).astype(np.float32)
    cosines, dx, dw = core.cosine_layer(x, w, g)

    def f(x64, w64):  # sum(g * cos(x, w)) in float64
        xn = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
        wn = w64 / np.linalg.norm(w64, axis=1, keepdims=True)
        return float((g * (xn @ wn.T)).sum()), xn @ wn.T

    assert np.abs(cosines - f(x.astype(np.float64), w.astype(np.float64))[1]).max() < 1e-6
    eps = 1e-6
    for value, grad in ((x, dx), (w, dw)):
        numeric = np.zeros(value.shape)
        for idx in np.ndindex(value.shape):
            up, down = x.astype(np.float64), w.astype(np.float64)
            pair_up = [up.copy(), down.copy()]
            pair_down = [up.copy(), down.copy()]
            k = 0 if value is x else 1
            pair_up[k][idx] += eps
            pair_down[k][idx] -= eps
            numeric[idx] = (f(*pair_up)[0] - f(*pair_down)[0]) / (2 * eps)
        assert np.abs(grad - numeric).max() <= 1e-4 * max(1.0, np.abs(numeric).max())
    # the gradient of a cosine is orthogonal to its own input: no pull on the length
    assert np.abs((dx * x).sum(1)).max() < 1e-4


def test_margin_bad_inputs():
    with pytest.raises(ValueError, match="scale"):
        core.MarginLoss(0.0, 0.1)
    with pytest.raises(ValueError, match="margins"):
        core.MarginLoss(8.0, 2.0)
    loss = core.MarginLoss(8.0, 0.1)
    with pytest.raises(ValueError, match="label 3"):
        loss.loss_and_gradient(np.zeros((2, 3), np.float32), [0, 3])
    with pytest.raises(TypeError):
        loss.loss_and_gradient(np.zeros((2, 3), np.float64), [0, 1])
    with pytest.raises(ValueError):
        core.cosine_layer(np.ones((2, 4), np.float32), np.ones((3, 5), np.float32), np.ones((2, 3), np.float32))


# ------------------------------------------------------------------------------------------------
# trainers


@pytest.fixture(scope="module")
def hard_johns(johns):
    chips, labels = johns
    names = sorted(set(labels))
    return datasets.degrade(chips, "lowres:10"), [names.index(n) for n in labels]


def _centres(chips, labels):
    return pfd._finetune.class_centres(pfd.models.path(FACE), chips, labels, max(labels) + 1, 2)


def _trainer(base, train_bn, chips, labels, level, fast, loss, threads=2, augment=False):
    return core.FaceTrainer(base, train_bn, chips, labels, level, 1e-3, 5, 5, augment, 1, 0, threads, fast,
                            margin_loss=loss, class_centres=_centres(chips, labels))


@pytest.mark.parametrize("loss, augment", [(core.MarginLoss(8.0, 0.2, 0.0), False),
                                           (core.MarginLoss(8.0, 0.0, 0.2), True)],
                         ids=["arcface", "cosface-augmented"])
def test_margin_steps_of_the_fast_path_match_dnn_trainer(hard_johns, loss, augment):
    """The data-parallel frozen-BN trainer (class layer and loss between the replicas' passes) takes
    exactly dnn_trainer's steps on loss_margin<cosine_fc<face net>>: the same batches and
    augmentation, the same losses step after step (so the same class-layer updates), the same net."""
    from test_train_fast_path import _assert_same_parameters

    chips, labels = hard_johns
    base = pfd.models.path(FACE)
    reference = _trainer(base, False, chips, labels, 0, False, loss, augment=augment)
    fast = _trainer(base, False, chips, labels, 0, True, loss, augment=augment)
    start, centres = fast.parameters(), fast.class_centres()
    assert sorted(start) == sorted(core.FaceTrainer(base, False, chips, labels, 0, 1e-3, 5, 5, False, 1, 0,
                                                    1).parameters())
    np.testing.assert_array_equal(centres, reference.class_centres())
    assert centres.shape == (5, 128)
    assert reference.train(1) == pytest.approx(fast.train(1), rel=1e-5)
    assert _assert_same_parameters(reference.parameters(), fast.parameters(), start) == 30
    # the class layer's step: the same (and a real one)
    step_ref, step_fast = reference.class_centres() - centres, fast.class_centres() - centres
    assert np.abs(step_ref).max() > 1e-5 and np.abs(step_ref - step_fast).max() <= 1e-3 * np.abs(step_ref).max()
    # later steps: the same batches and augmentation; the two paths' rounding drifts apart slowly
    # (loss_metric's do too: 2e-3 by the fourth step at this learning rate)
    for _ in range(2):
        assert fast.train(1) == pytest.approx(reference.train(1), rel=1e-3)


@pytest.mark.parametrize("strategy, bn", [("head", "frozen"), ("all", "frozen"), ("from_level:5", "calibrated")])
def test_margin_checkpoint_round_trip(tmp_path, hard_johns, strategy, bn):
    """A restored checkpoint (net, class layer, solvers) continues exactly as the run it came from."""
    chips, labels = hard_johns
    kind, level = pfd.parse_strategy(strategy)
    base = pfd.models.path(FACE)
    train_bn = bn == "calibrated"
    if train_bn:
        pfd.convert_affine_to_bn(base, tmp_path / "bn.dat", calibration=chips)
        base = str(tmp_path / "bn.dat")
    loss = core.MarginLoss(8.0, 0.15, 0.0)
    run = _trainer(base, train_bn, chips, labels, level, True, loss)
    run.train(2 if kind != "head" else 20)
    saved = run.checkpoint()
    continued = run.train(2 if kind != "head" else 20)
    other = _trainer(base, train_bn, chips, labels, level, True, loss)
    other.restore(saved)
    assert other.train(2 if kind != "head" else 20) == pytest.approx(continued, rel=1e-6)
    for index, values in run.parameters().items():
        np.testing.assert_array_equal(values, other.parameters()[index])
    np.testing.assert_array_equal(run.class_centres(), other.class_centres())
    with pytest.raises(pfd.ModelFormatError, match="checkpoint"):
        _trainer(base, train_bn, chips, labels, level, True, loss).restore(saved[: len(saved) // 2])


def test_margin_trainer_rejects_bad_class_centres(hard_johns):
    chips, labels = hard_johns
    base = pfd.models.path(FACE)
    loss = core.MarginLoss(8.0, 0.1)
    good = _centres(chips, labels)
    for centres, match in ((good[:3], "one row per label"), (np.zeros((5, 128), np.float32), "non-zero"),
                           (np.ones((5, 64), np.float32), "128")):
        with pytest.raises(ValueError, match=match):
            core.FaceTrainer(base, False, chips, labels, 0, 1e-3, 5, 5, False, 1, 0, 1, margin_loss=loss,
                             class_centres=centres)
    with pytest.raises(ValueError, match="class_centres"):
        core.FaceTrainer(base, False, chips, labels, 0, 1e-3, 5, 5, False, 1, 0, 1, margin_loss=loss)


# ------------------------------------------------------------------------------------------------
# finetune() with a margin loss


@pytest.mark.parametrize("loss, strategy, steps", [("arcface", "head", 60), ("cosface", "all", 4)])
def test_margin_trained_export_is_a_dlib_drop_in_at_0_6(tmp_path, johns, dlib_bin, loss, strategy, steps):
    """The export is the 128-D net without the class layer: dlib-bin loads it and gives our
    descriptors, and it is scaled so that its most accurate validation threshold is dlib's 0.6."""
    chips, labels = johns
    chips = datasets.degrade(chips, "lowres:10")
    result = pfd.finetune((chips, labels), tmp_path, strategy=strategy, loss=loss, steps=steps,
                          val_every=2 if steps < 10 else 20, progress=False)
    assert (result.loss, result.strategy) == (loss, strategy) and result.threshold == 0.6
    theirs = np.array(dlib_bin.face_recognition_model_v1(result.affine_model).compute_face_descriptor(list(chips[:8])))
    ours = pfd.FaceEmbedder(result.affine_model).embed_chips(chips[:8])
    assert np.abs(ours - theirs).max() <= 1e-5
    # re-measured on the exported file: its most accurate threshold on the run's validation pairs is 0.6
    from pyfacedlib.evaluate import best_threshold, sample_pairs

    config = pfd.FinetuneConfig(strategy=strategy, loss=loss, steps=steps, progress=False)
    validation = pfd._finetune.prepare_data((chips, labels), None, config).validation
    assert validation is not None and result.validation_identities == len(validation.identities)
    pairs = sample_pairs(validation.labels, pfd._finetune.VALIDATION_SAME_PAIRS, config.seed, folds=10)
    exported = pfd.FaceEmbedder(result.affine_model).embed_chips(validation.chips).astype(np.float64)
    d = np.linalg.norm(exported[pairs.first] - exported[pairs.second], axis=1)
    assert best_threshold(d, pairs.same) == pytest.approx(0.6, rel=1e-4)
    history = json.loads(Path(result.history_path).read_text())
    assert history["descriptor_scale"] == pytest.approx(result.descriptor_scale) != 1.0
    assert core.net_kind(result.bn_model) == "bn"


def test_margin_resume_and_settings(tmp_path, johns):
    chips, labels = johns
    first = pfd.finetune((chips, labels), tmp_path, strategy="head", loss="cosface", steps=40, checkpoint_every=20,
                         val_every=20, progress=False)
    again = pfd.finetune((chips, labels), tmp_path, strategy="head", loss="cosface", steps=60, checkpoint_every=20,
                         val_every=20, progress=False)
    assert first.steps == 40 and again.resumed_from_step == 40 and again.steps == 60
    with pytest.raises(ValueError, match="different run"):
        pfd.finetune((chips, labels), tmp_path, strategy="head", loss="arcface", steps=80, progress=False)
    for bad in ({"loss": "triplet"}, {"margin": 0.1}, {"scale": 8.0}, {"loss": "arcface", "margin": 2.0},
                {"loss": "cosface", "scale": 0.0}, {"warmup": 1.0}, {"schedule": "step"}):
        with pytest.raises(ValueError):
            pfd.FinetuneConfig(**bad)
    settings = pfd.FinetuneConfig(loss="arcface").margin_settings(500)
    assert settings[0] == pytest.approx(np.sqrt(2) * np.log(499)) and settings[1:] == (0.1, 0.0)
    assert pfd.FinetuneConfig(loss="cosface", margin=0.2, scale=10.0).margin_settings(5) == (10.0, 0.0, 0.2)
    assert pfd.FinetuneConfig(loss="cosface").margin_settings(3)[0] == 4.0  # AdaCos's scale floors at 4


def test_auto_strategy_and_cosine_schedule():
    assert pfd.FinetuneConfig().strategy == "auto"
    assert pfd.FinetuneConfig().resolved(3000, 500).strategy == "all"
    # 200-999 faces (most people with a few photos): the whole net at 5e-5, exported halfway back to
    # the base model; a margin loss or calibrated BN keeps from_level:4; given settings always win
    small = pfd.FinetuneConfig().resolved(400, 40)
    assert (small.strategy, small.learning_rate, small.base_weight) == ("all", 5e-5, 0.5)
    assert pfd.FinetuneConfig(lr=1e-4, base_weight=0.0).resolved(400, 40).learning_rate == 1e-4
    assert pfd.FinetuneConfig(base_weight=0.0).resolved(400, 40).base_weight == 0.0
    for other in ({"loss": "cosface"}, {"bn": "calibrated"}):
        config = pfd.FinetuneConfig(**other).resolved(400, 40)
        assert (config.strategy, config.learning_rate, config.base_weight) == ("from_level:4", 1e-4, 0.0)
    assert pfd.FinetuneConfig().resolved(3000, 500).base_weight == 0.0
    assert pfd.FinetuneConfig().resolved(55, 5).strategy == "head"
    assert pfd.FinetuneConfig(strategy="head").resolved(3000, 500).strategy == "head"
    with pytest.raises(ValueError, match="resolved"):
        _ = pfd.FinetuneConfig().kind
    config = pfd.FinetuneConfig(strategy="all", lr=1e-3, warmup=0.1)
    rates = [config.learning_rate_at(step, 100) for step in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == pytest.approx(1e-3)
    assert max(rates) == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-5, rel=0.05)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:]))


def test_head_rate_depends_on_the_loss():
    """The head alone learns at 0.01 with loss_metric but 0.001 with a margin loss (measured: at
    0.01 the margin head never got back to its starting accuracy); an explicit lr always wins."""
    from pyfacedlib._finetune import HEAD_MARGIN_LR, STRATEGY_DEFAULTS
    assert pfd.FinetuneConfig(strategy="head").learning_rate == STRATEGY_DEFAULTS["head"][0] == 0.01
    for loss in ("cosface", "arcface"):
        assert pfd.FinetuneConfig(strategy="head", loss=loss).learning_rate == HEAD_MARGIN_LR == 0.001
        assert pfd.FinetuneConfig(strategy="head", loss=loss, lr=0.02).learning_rate == 0.02
    assert pfd.FinetuneConfig(strategy="all", loss="cosface").learning_rate == 1e-4


def test_cli_takes_the_loss():
    from pyfacedlib.cli import build_parser

    args = build_parser().parse_args(["finetune", "T", "O", "--loss", "arcface", "--margin", "0.15", "--scale", "12",
                                      "--schedule", "plateau"])
    assert (args.loss, args.margin, args.scale, args.schedule) == ("arcface", 0.15, 12.0, "plateau")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["finetune", "T", "O", "--loss", "triplet"])


def test_max_minutes_compresses_the_cosine_schedule(tmp_path, johns):
    """A time budget ends the run with the schedule run through (lr near its floor), not cut off at its peak."""
    chips, labels = johns
    result = pfd.finetune((chips, labels), tmp_path, strategy="head", steps=10**7, max_minutes=0.1, val_every=10**6,
                          checkpoint_every=10**6, progress=False)
    history = json.loads(Path(result.history_path).read_text())["history"]
    rates = [h["lr"] for h in history if h["kind"] == "train"]
    assert 0 < result.steps < 10**7 and result.minutes < 1.0
    assert max(rates) > 0.5 * 0.01 and rates[-1] < 0.2 * 0.01, rates[-5:]
