"""A quality score per face: how likely the face is to be compared correctly, in [0, 1].

Built only from what the pipeline already has for every face: the HOG detector's score, the face's
width in the original image, the chip's sharpness and — with the shipped face model — where its
descriptor lies (faces the model cannot read well get short descriptors near the middle of the
descriptor cloud). A logistic model of "a comparison at dlib's 0.6 with another face comes out
right", in which each face contributes its own term (logit = q_a + q_b + c), fitted on LFW
peopleDevTrain images only, clean and at reduced resolutions (`python benchmarks/quality_lfw.py
--fit`, never DevTest); the coefficients are below. The score is the sigmoid of the face's term,
so it ranks faces; 0.5 is not a decision threshold.

Two variants: MODEL uses the descriptor (shipped model, descriptors without jitter);
MODEL_WITHOUT_DESCRIPTOR does not (fine-tuned or other models, jittered descriptors). Faces found
by dlib's CNN detector get NaN: its confidence is on another scale than the HOG scores the model
was fitted on. Measured in docs/galleries-and-identify.md ("Face quality").
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# the inputs of MODEL, in order; MODEL_WITHOUT_DESCRIPTOR takes the first three
FEATURES = ("detector_score", "log2_face_width", "log_sharpness", "descriptor_norm", "distance_to_mean")
# the shipped model's mean descriptor over peopleDevTrain faces (distance_to_mean's centre)
MEAN_DESCRIPTOR: tuple[float, ...] = (
    -0.091918, 0.088181, 0.052064, -0.037673, -0.094453, -0.014266, -0.016012, -0.113636, 0.136036,
    -0.056728, 0.199149, -0.037546, -0.243612, -0.048438, -0.031752, 0.122172, -0.145686, -0.122217,
    -0.120784, -0.077635, 0.012891, 0.032267, 0.038746, 0.016708, -0.134872, -0.305225, -0.071859,
    -0.089015, 0.055834, -0.088984, 0.016816, 0.057574, -0.181344, -0.059508, 0.029005, 0.061217, -0.050216,
    -0.065379, 0.215533, 0.00982, -0.171595, 0.016075, 0.056388, 0.2449, 0.203794, 0.00385, 0.024348,
    -0.070421, 0.114403, -0.258003, 0.049236, 0.144155, 0.118624, 0.07217, 0.082081, -0.141227, 0.0179,
    0.137864, -0.18165, 0.071278, 0.070862, -0.092776, -0.037452, -0.036804, 0.15339, 0.087053, -0.087094,
    -0.139616, 0.166612, -0.140906, -0.043293, 0.07544, -0.09096, -0.162283, -0.264064, 0.036391, 0.368497,
    0.123382, -0.176999, 0.016364, -0.068995, -0.020286, 0.033205, 0.03147, -0.075026, -0.051, -0.09205,
    0.01799, 0.194545, -0.028849, -0.019598, 0.214924, 0.012454, -0.006421, 0.044599, 0.049087, -0.111639,
    -0.004911, -0.11514, -0.00647, 0.043749, -0.102397, 0.012605, 0.080732, -0.173827, 0.161265, -0.020613,
    -0.026092, -0.007942, -0.0241, -0.080237, 0.00071, 0.173786, -0.250486, 0.214095, 0.17474, -0.000783,
    0.130204, 0.068823, 0.061314, 0.00308, 0.000879, -0.129921, -0.111066, 0.032354, -0.03074, 0.017735,
    0.038494,
)
# fitted by benchmarks/quality_lfw.py --fit: standardised features ((x - mean) / scale) . weights + bias
MODEL: dict = {
    "mean": [1.746712, 6.352042, 3.46677, 1.407257, 0.566009],
    "scale": [0.596883, 0.517476, 0.704416, 0.062941, 0.046075],
    "weights": [0.392906, 0.102906, -0.072741, -0.096609, 0.240263],
    "bias": 0.132517,
}
MODEL_WITHOUT_DESCRIPTOR: dict = {
    "mean": [1.746712, 6.352042, 3.46677],
    "scale": [0.596883, 0.517476, 0.704416],
    "weights": [0.405318, 0.090366, -0.02892],
    "bias": 0.095448,
}


def chip_sharpness(chips: np.ndarray) -> np.ndarray:
    """log(1 + variance of the 4-neighbour Laplacian of the luminance) over each chip's central
    half, (N,) float64: blurred or upscaled faces have little high-frequency energy."""
    chips = np.asarray(chips)
    n, h, w = chips.shape[:3]
    centre = chips[:, h // 4: h - h // 4, w // 4: w - w // 4].astype(np.float32)
    weights = np.array([0.299, 0.587, 0.114], np.float32)
    centre = centre[..., 0] * weights[0] + centre[..., 1] * weights[1] + centre[..., 2] * weights[2]
    lap = (centre[:, 1:-1, 1:-1] * 4 - centre[:, :-2, 1:-1] - centre[:, 2:, 1:-1]
           - centre[:, 1:-1, :-2] - centre[:, 1:-1, 2:])
    return np.log1p(lap.reshape(n, -1).var(axis=1).astype(np.float64))


def face_features(scores: Sequence[float] | np.ndarray, boxes: np.ndarray, sharpness: np.ndarray,
                  descriptors: np.ndarray | None) -> np.ndarray:
    """The models' inputs in FEATURES order, (N, 5) float64, or (N, 3) without descriptors."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    width = np.maximum(boxes[:, 2] - boxes[:, 0], 1.0)
    columns = [np.asarray(scores, np.float64).reshape(-1), np.log2(width), np.asarray(sharpness, np.float64)]
    if descriptors is not None:
        d = np.asarray(descriptors, np.float64).reshape(len(width), -1)
        columns += [np.linalg.norm(d, axis=1), np.linalg.norm(d - np.asarray(MEAN_DESCRIPTOR), axis=1)]
    return np.stack(columns, axis=1)


def quality_from_features(features: np.ndarray, model: dict | None = None) -> np.ndarray:
    """Quality (N,) float32 in [0, 1] from face_features' rows (MODEL for 5 columns,
    MODEL_WITHOUT_DESCRIPTOR for 3, unless `model` is given)."""
    x = np.asarray(features, np.float64)
    model = model or (MODEL if x.shape[1] == len(FEATURES) else MODEL_WITHOUT_DESCRIPTOR)
    z = (x - np.asarray(model["mean"])) / np.asarray(model["scale"])
    logit = z @ np.asarray(model["weights"]) + model["bias"]
    return (1.0 / (1.0 + np.exp(-np.clip(logit, -30, 30)))).astype(np.float32)


def face_quality(scores: Sequence[float] | np.ndarray, boxes: np.ndarray, chips: np.ndarray,
                 descriptors: np.ndarray | None = None, detector: str = "hog") -> np.ndarray:
    """Quality (N,) float32 in [0, 1] of N faces: HOG detector scores (N,), boxes (N, 4) in the
    original image, chips (N, 150, 150, 3) uint8 and, when they come from the shipped face model
    without jitter, descriptors (N, 128) (None: the variant without them). `detector`: which
    detector found the faces; 'cnn' gives NaN (see the module docstring)."""
    chips = np.asarray(chips)
    if detector != "hog":
        return np.full(len(chips), np.nan, np.float32)
    if len(chips) == 0:
        return np.zeros(0, np.float32)
    return quality_from_features(face_features(scores, boxes, chip_sharpness(chips), descriptors))
