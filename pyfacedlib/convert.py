"""Converting dlib's face net between its testing form (affine) and its training form (bn_con).

The shipped dlib_face_recognition_resnet_model_v1.dat holds the *testing* network: every batch-norm
layer folded into a fixed per-channel affine map y = g*x + b. convert_affine_to_bn rebuilds the
*training* network from it:

* exact (calibration=None): running mean 0, running variance 1-eps, gamma=g, beta=b. In inference
  the bn net computes the same function. In training mode, where batch norm normalises each
  channel by its batch statistics, it computes a different one.
* calibrated: each BN layer's input mean m and variance v are measured on real faces (streamed
  through the affine net), then running mean=m, running variance=v, gamma=g*sqrt(v+eps),
  beta=b+g*m. Inference is still exact, and training mode now computes ~the same function on
  faces like the calibration set, so fine-tuning starts from the pretrained network.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from . import _atomic
from ._native import core
from .chipcache import load_faces
from .embedder import FaceEmbedder, default_threads
from .errors import ModelFormatError
from .faces import FaceInput, identity_batches

Calibration = FaceInput | None

DRIFT_BATCH = 25


@dataclass
class ConversionReport:
    """What a conversion did and measured."""

    src: str
    dst: str
    direction: str                     # "affine->bn" or "bn->affine"
    mode: str                          # "exact", "calibrated" or "-" (bn->affine)
    calibration_faces: int = 0
    calibration_skipped: int = 0
    holdout_faces: int = 0
    layers: list[dict] = field(default_factory=list)  # per BN layer: index, channels, input mean/var summary
    drift_mean: float | None = None    # L2 distance, training-mode bn net vs affine net, held-out faces
    drift_max: float | None = None
    exact_drift_mean: float | None = None  # the same for the exact conversion, for comparison
    exact_drift_max: float | None = None

    def to_dict(self) -> dict:
        """The report as plain JSON-able data."""
        return asdict(self)

    def summary(self) -> str:
        """A few human-readable lines."""
        lines = [f"{self.direction} ({self.mode}): {self.src} -> {self.dst}"]
        if self.calibration_faces:
            lines.append(f"calibrated on {self.calibration_faces} faces ({self.calibration_skipped} images skipped), "
                         f"{len(self.layers)} batch-norm layers")
        if self.drift_mean is not None:
            lines.append(f"batch-mode drift on {self.holdout_faces} held-out faces (batches of {DRIFT_BATCH}): "
                         f"mean {self.drift_mean:.4f}, max {self.drift_max:.4f}")
        if self.exact_drift_mean is not None:
            lines.append(f"  exact conversion on the same faces: mean {self.exact_drift_mean:.4f}, "
                         f"max {self.exact_drift_max:.4f}")
        return "\n".join(lines)


def batch_mode_drift(bn_path: str | os.PathLike, affine_descriptors: np.ndarray, chips: np.ndarray,
                     batches: list[np.ndarray]) -> np.ndarray:
    """Per-face L2 distance between a bn net's training-mode descriptors (given batches) and `affine_descriptors`."""
    order = np.concatenate(batches)
    batch_size = len(batches[0])
    if any(len(b) != batch_size for b in batches):
        raise ValueError("all drift batches must have the same size")
    trained = core.bn_net_descriptors(str(bn_path), np.ascontiguousarray(chips[order]), batch_size)
    return np.linalg.norm(trained.astype(np.float64) - affine_descriptors[order], axis=1)


def _check_src(src: str | os.PathLike, expected: str) -> str:
    src = os.fspath(src)
    kind = core.net_kind(src)  # ModelFormatError for anything that is not a face net
    if kind != expected:
        raise ModelFormatError(
            f"'{src}' holds the {'bn_con training' if kind == 'bn' else 'affine testing'} net, but the "
            f"{'bn_con training' if expected == 'bn' else 'affine testing'} net was expected")
    return src


def convert_affine_to_bn(src: str | os.PathLike, dst: str | os.PathLike, calibration: Calibration = None,
                         holdout: Calibration = None, threads: int | None = None, progress: bool = False,
                         cache_dir: str | os.PathLike | None = None) -> ConversionReport:
    """Writes the bn_con training net recovered from the affine testing net `src` to `dst` (atomically, clean()ed).

    calibration: None (exact conversion), or faces to measure batch-norm statistics on: face chips
    (N,150,150,3) uint8, a FaceSet, or a folder of images (aligned through the chip cache in
    `cache_dir`, as fine-tuning aligns them; skips counted).
    holdout: faces for the batch-mode drift measurement (never used for calibration). When it is
    None and calibration has at least 50 faces, a fifth of them (>= 25) is held out instead.
    Raises ModelFormatError when `src` is not an affine face-net file.
    """
    src = _check_src(src, "affine")
    dst = os.fspath(dst)
    threads = threads or default_threads()
    report = ConversionReport(src=src, dst=dst, direction="affine->bn",
                              mode="exact" if calibration is None else "calibrated")
    calib = load_faces(calibration, cache_dir, progress=progress) if calibration is not None else None
    held = load_faces(holdout, cache_dir, progress=progress) if holdout is not None else None
    if calib is not None:
        report.calibration_skipped = len(calib.skipped)
        if held is None and len(calib.chips) >= 50:
            n_hold = max(DRIFT_BATCH, len(calib.chips) // 5)
            order = np.random.default_rng(0).permutation(len(calib.chips))
            held, calib = calib.take(np.sort(order[:n_hold])), calib.take(np.sort(order[n_hold:]))
        if len(calib.chips) < 2:
            raise ValueError(f"calibration needs at least 2 faces, found {len(calib.chips)}")
        calibrator = core.BnCalibrator(src, threads)
        steps = range(0, len(calib.chips), 64)
        if progress:
            from tqdm import tqdm

            steps = tqdm(steps, desc="calibrating", unit="batch")
        for start in steps:
            calibrator.add(np.ascontiguousarray(calib.chips[start:start + 64]))
        statistics = calibrator.statistics()
        report.calibration_faces = calibrator.faces
        report.layers = [
            {"bn_layer": i, "channels": int(len(mean)), "values_per_channel": int(count),
             "input_mean_abs_avg": float(np.abs(mean).mean()), "input_var_avg": float(var.mean()),
             "input_var_min": float(var.min())}
            for i, (mean, var, count) in enumerate(statistics)]
        data = core.affine_to_bn(src, statistics)
    else:
        data = core.affine_to_bn(src)
    _atomic.write_bytes(dst, data)

    if held is not None and len(held.chips) >= DRIFT_BATCH:
        batches = identity_batches(held.labels.tolist())
        reference = FaceEmbedder(src, threads=threads).embed_chips(held.chips).astype(np.float64)
        drift = batch_mode_drift(dst, reference, held.chips, batches)
        report.holdout_faces = int(len(drift))
        report.drift_mean, report.drift_max = float(drift.mean()), float(drift.max())
        if calib is not None:
            with tempfile.TemporaryDirectory() as tmp:
                exact = Path(tmp) / "exact_bn.dat"
                exact.write_bytes(core.affine_to_bn(src))
                exact_drift = batch_mode_drift(exact, reference, held.chips, batches)
            report.exact_drift_mean, report.exact_drift_max = float(exact_drift.mean()), float(exact_drift.max())
    return report


def convert_bn_to_affine(src: str | os.PathLike, dst: str | os.PathLike) -> ConversionReport:
    """Writes the affine testing net of the bn_con training net `src` to `dst` (atomically).

    The result loads in dlib.face_recognition_model_v1 (dlib >= 19.24.3 / 20.x), in the
    face_recognition package, and in pyfacedlib.FaceEmbedder. Raises ModelFormatError when `src`
    is not a bn_con face-net file.
    """
    src = _check_src(src, "bn")
    dst = os.fspath(dst)
    _atomic.write_bytes(dst, core.bn_to_affine(src))
    return ConversionReport(src=src, dst=dst, direction="bn->affine", mode="-")
