"""Child process of test_core_boundary.py: calls every _core entry point with bad arrays and prints
one JSON line per call, so a crash (segfault, abort) shows up as a dead child, not a dead pytest."""
from __future__ import annotations

import functools
import json
import sys

import numpy as np

import pyfacedlib as pfd
from pyfacedlib._native import core

FACE = pfd.models.path("dlib_face_recognition_resnet_model_v1")
LANDMARKS = pfd.models.path("shape_predictor_5_face_landmarks")
CNN = pfd.models.path("mmod_human_face_detector")
BN_PATH = sys.argv[1]  # a bn_con net written by the parent


def variants(good: np.ndarray) -> dict[str, object]:
    """Bad versions of a good array argument, by what is wrong with them."""
    bad_shape = np.zeros(good.shape[:-1] + (good.shape[-1] + 1,), good.dtype)
    wide = np.zeros(good.shape[:-1] + (good.shape[-1] * 2,), good.dtype)
    return {
        "dtype": good.astype(np.float32 if good.dtype != np.float32 else np.float64),
        "big_endian": good.astype(good.dtype.newbyteorder(">")) if good.dtype.itemsize > 1 else good.astype(np.int16),
        "shape": bad_shape,
        "ndim": good.reshape(-1),
        "non_contiguous": wide[..., ::2],
        "list": good.tolist(),
        "none": None,
        "empty": np.zeros((0,) + good.shape[1:], good.dtype),
    }


def report(name: str, case: str, call) -> None:
    """Runs one call and prints its outcome ("ok" or the exception, one line) for the parent to judge."""
    try:
        call()
        outcome = "ok"
    except Exception as exc:  # noqa: BLE001 - the outcome is reported, judged by the parent
        outcome = type(exc).__name__ + ": " + str(exc).splitlines()[0][:160]
    print(json.dumps({"entry": name, "case": case, "outcome": outcome}), flush=True)


def main() -> None:
    chips = np.zeros((4, 150, 150, 3), np.uint8)
    image = np.zeros((80, 80, 3), np.uint8)
    points = np.array([[30, 30], [50, 30], [40, 45], [32, 55], [48, 55]], np.int64)
    descriptors = np.zeros((6, 128), np.float64)
    labels = [0, 0, 1, 1]
    hog, cnn, predictor = core.HogFaceDetector(), core.CnnFaceDetector(CNN), core.LandmarkPredictor(LANDMARKS)
    embedder = core.FaceEmbedderCore(FACE, 2)
    calibrator = core.BnCalibrator(FACE, 2)
    trainer = core.FaceTrainer(FACE, False, np.zeros((8, 150, 150, 3), np.uint8), [0, 0, 0, 0, 1, 1, 1, 1],
                               0, 1e-4, 2, 2, False, 1, 0, 1)
    margin = core.MarginLoss(8.0, 0.1)
    cosines = np.full((4, 2), 0.5, np.float32)
    x, centres = np.ones((4, 128), np.float32), np.ones((2, 128), np.float32)
    boxes = np.array([[10, 10, 60, 60]], np.int64)
    calls = {  # entry point -> (the good array, call with one array argument replaced)
        "HogFaceDetector.detect": (image, lambda a: hog.detect(a, 0)),
        "CnnFaceDetector.detect": (image, lambda a: cnn.detect(a, 0)),
        "LandmarkPredictor.predict": (image, lambda a: predictor.predict(a, 10, 10, 60, 60)),
        "LandmarkPredictor.align[image]": (image, lambda a: predictor.align(a, boxes, 150, 0.25)),
        "LandmarkPredictor.align[boxes]": (boxes, lambda a: predictor.align(image, a, 150, 0.25)),
        "extract_face_chip[image]": (image, lambda a: core.extract_face_chip(a, points, 150, 0.25)),
        "extract_face_chip[landmarks]": (points, lambda a: core.extract_face_chip(image, a, 150, 0.25)),
        "FaceEmbedderCore.embed_chips": (chips, lambda a: embedder.embed_chips(a, 0, 0)),
        "FaceEmbedderCore.jitter_chips": (chips, lambda a: core.FaceEmbedderCore.jitter_chips(a, 2, 0)),
        "BnCalibrator.add": (chips, lambda a: calibrator.add(a)),
        "bn_net_descriptors": (chips, lambda a: core.bn_net_descriptors(BN_PATH, a, 2)),
        "metric_loss": (chips, lambda a: core.metric_loss(FACE, a, labels)),
        "chinese_whispers": (descriptors, lambda a: core.chinese_whispers(a, 0.5)),
        "FaceTrainer[chips]": (chips, lambda a: core.FaceTrainer(FACE, False, a, labels, 0, 1e-4, 2, 2, False, 1,
                                                                 0, 1)),
        "FaceTrainer.validation_loss": (chips, lambda a: trainer.validation_loss(a, labels, 2)),
        "FaceTrainer[class_centres]": (centres, lambda a: core.FaceTrainer(FACE, False, chips, labels, 0, 1e-4, 2, 2,
                                                                          False, 1, 0, 1, margin_loss=margin,
                                                                          class_centres=a)),
        "MarginLoss.loss_and_gradient": (cosines, lambda a: margin.loss_and_gradient(a, labels)),
        "cosine_layer[x]": (x, lambda a: core.cosine_layer(a, centres, cosines)),
        "cosine_layer[centres]": (centres, lambda a: core.cosine_layer(x, a, cosines)),
        "cosine_layer[gradient]": (cosines, lambda a: core.cosine_layer(x, centres, a)),
    }
    for name, (good, call) in calls.items():
        for what, value in variants(good).items():
            if name in ("chinese_whispers", "MarginLoss.loss_and_gradient") and what == "shape":
                continue  # (N, D) descriptors of any D / cosines over any number of classes are valid
            if name == "FaceTrainer[class_centres]" and what == "none":
                continue  # None means "no class centres": the margin loss then asks for them (ValueError, tested)
            report(name, what, functools.partial(call, value))

    # arguments that are not arrays but reach native code: out-of-range values and garbage bytes
    scalar_calls = {
        "FaceTrainer.validation_loss[labels]": lambda: trainer.validation_loss(chips, [0, 1], 2),
        "FaceTrainer.validation_loss[batch_size]": lambda: trainer.validation_loss(chips, labels, 0),
        "FaceTrainer[labels]": lambda: core.FaceTrainer(FACE, False, chips, [0, 0, 0, 0], 0, 1e-4, 2, 2, False, 1,
                                                        0, 1),
        "FaceTrainer[negative label]": lambda: core.FaceTrainer(FACE, False, chips, [0, -1, 1, 1], 0, 1e-4, 2, 2, False,
                                                                1, 0, 1),
        "FaceTrainer[level]": lambda: core.FaceTrainer(FACE, False, chips, labels, 9, 1e-4, 2, 2, False, 1, 0, 1),
        "FaceTrainer[lr]": lambda: core.FaceTrainer(FACE, False, chips, labels, 0, float("nan"), 2, 2, False, 1, 0, 1),
        "FaceTrainer[batch]": lambda: core.FaceTrainer(FACE, False, chips, labels, 0, 1e-4, 0, 2, False, 1, 0, 1),
        "FaceTrainer[threads]": lambda: core.FaceTrainer(FACE, False, chips, labels, 0, 1e-4, 2, 2, False, 1, 0, 0),
        "FaceTrainer.train[steps]": lambda: trainer.train(-1),
        "FaceTrainer.restore": lambda: trainer.restore(b"not a checkpoint"),
        "metric_loss[labels]": lambda: core.metric_loss(FACE, chips, [0, 1]),
        "metric_loss[one chip]": lambda: core.metric_loss(FACE, chips[:1], [0]),
        "bn_net_descriptors[batch_size]": lambda: core.bn_net_descriptors(BN_PATH, chips, 0),
        "affine_to_bn[statistics]": lambda: core.affine_to_bn(FACE, [(np.zeros(3), np.ones(3), 1.0)]),
        "affine_to_bn[statistics type]": lambda: core.affine_to_bn(FACE, ["nonsense"]),
        "extract_face_chip[size]": lambda: core.extract_face_chip(image, points, 0, 0.25),
        "LandmarkPredictor.align[size]": lambda: predictor.align(image, boxes, 0, 0.25),
        "LandmarkPredictor.align[inverted box]": lambda: predictor.align(image, boxes[:, ::-1].copy(), 150, 0.25),
        "extract_face_chip[points]": lambda: core.extract_face_chip(image, points[:4], 150, 0.25),
        "HogFaceDetector.detect[upsample]": lambda: hog.detect(image, 40),
        "HogFaceDetector[kernel]": lambda: core.HogFaceDetector("avx512"),
        "CnnFaceDetector.detect[upsample]": lambda: cnn.detect(image, 40),
        "FaceEmbedderCore.jitter_chips[num_jitters]": lambda: core.FaceEmbedderCore.jitter_chips(chips, 0, 0),
        "FaceEmbedderCore.backend": lambda: setattr(embedder, "backend", "gpu"),
        "FaceEmbedderCore.conv_kernel": lambda: setattr(embedder, "conv_kernel", "winograd"),
        "set_training_conv_kernel": lambda: core.set_training_conv_kernel("winograd"),
        "FaceEmbedderCore[path]": lambda: core.FaceEmbedderCore(LANDMARKS, 1),
        "CnnFaceDetector[path]": lambda: core.CnnFaceDetector(FACE),
        "LandmarkPredictor[path]": lambda: core.LandmarkPredictor(FACE),
        "BnCalibrator[path]": lambda: core.BnCalibrator(BN_PATH, 1),
        "net_kind[path]": lambda: core.net_kind(LANDMARKS),
        "folded_net_graph[path]": lambda: core.folded_net_graph(LANDMARKS),
        "bn_to_affine[path]": lambda: core.bn_to_affine(FACE),
        "sgemm_gflops[shape]": lambda: core.sgemm_gflops(-1, 10, 10, 1),
        "identity_batches[labels]": lambda: core.identity_batches(["a", "b"], 2, 2),
        "identity_batches[negative label]": lambda: core.identity_batches([0, -3], 2, 2),
        "identity_batches[identities]": lambda: core.identity_batches([0, 1, 1], 0, 2),
        "MarginLoss[scale]": lambda: core.MarginLoss(-1.0),
        "MarginLoss[margin]": lambda: core.MarginLoss(8.0, float("nan")),
        "MarginLoss.loss_and_gradient[labels]": lambda: margin.loss_and_gradient(cosines, [0, 1, 2, 7]),
        "MarginLoss.loss_and_gradient[no rows]": lambda: margin.loss_and_gradient(np.zeros((0, 2), np.float32), []),
        "cosine_layer[no rows]": lambda: core.cosine_layer(np.zeros((0, 128), np.float32), centres,
                                                           np.zeros((0, 2), np.float32)),
        "cosine_layer[zero vector]": lambda: core.cosine_layer(np.zeros((4, 128), np.float32), centres, cosines),
        "FaceTrainer[margin without centres]": lambda: core.FaceTrainer(FACE, False, chips, labels, 0, 1e-4, 2, 2,
                                                                        False, 1, 0, 1, margin_loss=margin),
        "scaled_descriptor_net[factor]": lambda: core.scaled_descriptor_net(FACE, 0.0),
        "scaled_descriptor_net[path]": lambda: core.scaled_descriptor_net(LANDMARKS, 2.0),
        "interpolated_net[alpha]": lambda: core.interpolated_net(FACE, FACE, 1.5),
        "interpolated_net[path]": lambda: core.interpolated_net(FACE, LANDMARKS, 0.5),
        "interpolated_net[bn net]": lambda: core.interpolated_net(FACE, BN_PATH, 0.5),
        "set_hog_scan_thread_budget": lambda: core.set_hog_scan_thread_budget(-1),
        "hog_scan_threads[reset_peak]": lambda: core.hog_scan_threads("yes"),
    }
    for name, call in scalar_calls.items():
        report(name, "value", call)

    # entry points without untrusted input, called once so that a crash still shows (not judged)
    plain_calls = {
        "FaceTrainer.backward_counts": lambda: trainer.backward_counts,
        "hog_scan_threads": lambda: core.hog_scan_threads(),
    }
    for name, call in plain_calls.items():
        report(name, "plain", call)
    print(json.dumps({"done": True}), flush=True)


if __name__ == "__main__":
    main()
