"""affine <-> bn conversion on real faces: exactness, dlib compatibility, calibration, bad files."""

import numpy as np
import pytest

import pyfacedlib as pfd
from pyfacedlib import ModelFormatError
from pyfacedlib._native import core

FACE = "dlib_face_recognition_resnet_model_v1"


@pytest.fixture(scope="module")
def shipped():
    return pfd.models.path(FACE)


@pytest.fixture(scope="module")
def exact_bn(tmp_path_factory, shipped):
    dst = tmp_path_factory.mktemp("convert") / "exact_bn.dat"
    report = pfd.convert_affine_to_bn(shipped, dst)
    assert report.mode == "exact"
    return dst


def test_exact_round_trip_reproduces_the_descriptors(tmp_path, shipped, exact_bn, johns, embedder):
    chips, _ = johns
    assert core.net_kind(str(exact_bn)) == "bn"
    back = tmp_path / "affine.dat"
    pfd.convert_bn_to_affine(exact_bn, back)
    assert core.net_kind(str(back)) == "affine"
    original = embedder.embed_chips(chips)
    assert np.abs(pfd.FaceEmbedder(back).embed_chips(chips) - original).max() <= 1e-6


def test_bn_net_one_face_at_a_time_is_inference_mode(exact_bn, johns, embedder):
    chips, _ = johns
    # batches of one sample make dlib's bn layers use their running statistics (inference mode)
    one_at_a_time = core.bn_net_descriptors(str(exact_bn), chips, 1)
    assert np.abs(one_at_a_time - embedder.embed_chips(chips)).max() <= 1e-5


def test_exported_file_loads_in_dlib_bin(tmp_path, exact_bn, johns, dlib_bin, embedder):
    chips, _ = johns
    back = tmp_path / "exported.dat"
    pfd.convert_bn_to_affine(exact_bn, back)
    theirs = np.array(dlib_bin.face_recognition_model_v1(str(back)).compute_face_descriptor(list(chips)))
    ours = pfd.FaceEmbedder(back).embed_chips(chips)
    assert np.abs(ours - theirs).max() <= 1e-5


def test_calibrated_conversion_keeps_inference_exact_and_cuts_batch_drift(tmp_path, shipped, johns, embedder):
    chips, labels = johns
    calib, hold = chips[:30], chips[30:55]
    dst = tmp_path / "calibrated_bn.dat"
    report = pfd.convert_affine_to_bn(shipped, dst, calibration=calib,
                                      holdout=pfd.FaceSet.from_chips(hold, labels[30:55]))
    assert report.mode == "calibrated" and report.calibration_faces == 30 and len(report.layers) == 29
    assert report.holdout_faces == 25
    assert report.drift_mean is not None and report.exact_drift_mean is not None
    assert report.drift_mean * 5 <= report.exact_drift_mean, report.summary()
    back = tmp_path / "calibrated_affine.dat"
    pfd.convert_bn_to_affine(dst, back)
    assert np.abs(pfd.FaceEmbedder(back).embed_chips(chips) - embedder.embed_chips(chips)).max() <= 1e-5


def test_wrong_kind_of_face_net_is_rejected(tmp_path, shipped, exact_bn):
    with pytest.raises(ModelFormatError, match="bn_con training net, but the affine"):
        pfd.convert_affine_to_bn(exact_bn, tmp_path / "x.dat")
    with pytest.raises(ModelFormatError, match="affine testing net, but the bn_con"):
        pfd.convert_bn_to_affine(shipped, tmp_path / "x.dat")
    assert not (tmp_path / "x.dat").exists()


@pytest.mark.parametrize("other", ["shape_predictor_5_face_landmarks", "mmod_human_face_detector"])
def test_other_dlib_files_are_rejected(tmp_path, other):
    for convert in (pfd.convert_affine_to_bn, pfd.convert_bn_to_affine):
        with pytest.raises(ModelFormatError, match="not a dlib face recognition network") as info:
            convert(pfd.models.path(other), tmp_path / "x.dat")
        assert other in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_files_never_crash_and_never_leave_dst(tmp_path, shipped):
    data = open(shipped, "rb").read()
    rng = np.random.default_rng(1)
    src, dst = tmp_path / "bad.dat", tmp_path / "out.dat"
    dst.write_bytes(b"previous content")
    cases = [b"", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()]
    cases += [data[:n] for n in rng.integers(1, len(data), 20)]
    for _ in range(10):  # bit flips in the header region, where sizes and records live
        flipped = bytearray(data)
        flipped[int(rng.integers(0, 4096))] ^= 1 << int(rng.integers(0, 8))
        cases.append(bytes(flipped))
    rejected = 0
    for case in cases:
        src.write_bytes(case)
        dst.write_bytes(b"previous content")
        try:
            pfd.convert_affine_to_bn(src, dst)
        except ModelFormatError as exc:
            assert str(src) in str(exc)
            assert dst.read_bytes() == b"previous content"
            rejected += 1
    assert rejected >= len(cases) - 10  # a flipped bit inside a float is still a valid (different) model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.dat", "out.dat"]


@pytest.fixture(scope="module")
def hard_batch(lfw_dir, tmp_path_factory):
    """25 LFW faces, 5 peopleDevTrain identities x 5, at 24 px: a batch with a non-zero metric loss."""
    from pyfacedlib import datasets

    people = [n for n, c in datasets.read_lfw_people(lfw_dir.parent / "peopleDevTrain.txt")[0] if c >= 5][:5]
    paths = [datasets.lfw_image(lfw_dir, n, i) for n in people for i in range(1, 6)]
    faces = pfd.ChipCache(tmp_path_factory.mktemp("cache")).faces(paths, [i // 5 for i in range(25)], progress=False)
    assert len(faces) == 25
    return datasets.degrade(faces.chips, "lowres:24"), [int(v) for v in faces.labels]


def test_training_starts_from_the_pretrained_loss_when_calibrated(tmp_path, shipped, hard_batch, lfw_dir):
    chips, labels = hard_batch
    pretrained = core.metric_loss(shipped, chips, labels)  # affine net: no batch statistics
    assert pretrained > 0
    exact, calibrated = tmp_path / "exact.dat", tmp_path / "calibrated.dat"
    pfd.convert_affine_to_bn(shipped, exact)
    pfd.convert_affine_to_bn(shipped, calibrated, calibration=chips)
    calibrated_loss = core.metric_loss(str(calibrated), chips, labels)  # bn net in training mode
    exact_loss = core.metric_loss(str(exact), chips, labels)
    assert abs(calibrated_loss - pretrained) < 0.25 * pretrained + 1e-3
    assert abs(exact_loss - pretrained) > abs(calibrated_loss - pretrained)
    # one real training step of the whole calibrated bn net: finite and near the pretrained loss
    trainer = core.FaceTrainer(str(calibrated), True, chips, labels, 0, 1e-4, 5, 5, False, 1, 0, 2)
    step_loss = trainer.train(1)
    assert np.isfinite(step_loss) and abs(step_loss - pretrained) < 0.5 * pretrained + 1e-3
