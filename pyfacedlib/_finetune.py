"""Fine-tuning dlib's face model on your own identities.

Three starting states, as in Caffe's fine-tuning tutorial: predict only (FaceEmbedder, no
training), train the last layer (`strategy="head"`), train from level K up (`"from_level:K"`, lower
levels frozen by learning-rate multipliers of 0) or everything (`"all"`). Batch norm is either
frozen (`bn="frozen"`: the affine testing net is trained directly) or trainable
(`bn="calibrated"`: the run starts from convert_affine_to_bn(base, calibration=the training faces)).

Levels are counted from the input: 0 = stem (7x7 conv), 1..5 = dlib's level4..level0 (32, 64, 128,
256, 256 channels), 6 = the head (fc_no_bias<128>); _core.NUM_LEVELS says how many there are.

A run, step by step (finetune() below): FinetuneConfig (validated settings, the one place for
defaults) -> prepare data (faces through the chip cache, identities held out for validation) ->
starting model (the base net, or its calibrated bn net) -> the training loop (TrainingRun:
steps in C++ with the GIL released, validation, best model, learning-rate schedule, checkpoints) ->
export (affine and bn files scaled to dlib's 0.6 threshold, history, curve).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _atomic, _faults, _plots, models
from ._native import DEVICES, core, resolve_device
from ._system import available_cpus
from .chipcache import load_faces
from .datasets import identity_split
from .embedder import FaceEmbedder
from .errors import CheckpointError
from .evaluate import DLIB_THRESHOLD, best_threshold, sample_pairs, verification
from .faces import FaceInput, FaceSet, identity_batches

HEAD_LEVEL = core.NUM_LEVELS - 1
BN_MODES = ("frozen", "calibrated")
LOSSES = ("metric", "cosface", "arcface")
SCHEDULES = ("cosine", "plateau")
# per kind of strategy: (peak learning rate, steps, validate every, checkpoint every)
STRATEGY_DEFAULTS = {
    "head": (0.01, 2000, 200, 500),
    "from_level": (0.0001, 400, 50, 25),
    "all": (0.0001, 400, 50, 25),
}
# the head's peak rate with a margin loss: at the head's 0.01 both margin losses drove the
# validation accuracy down and never came back within 2,000 steps; at 0.001 CosFace recovered and
# gained (README "Fine-tuning", head rows).
HEAD_MARGIN_LR = 0.001
# margins of the margin losses when none is given: ArcFace in radians, CosFace in cosine units.
# dlib's descriptors decide same/different around 22 degrees, so these are far below insightface's
# 0.5 / 0.4 (tuned for unit-norm features and ~85k identities); README "Margin losses".
DEFAULT_MARGINS = {"cosface": 0.1, "arcface": 0.1}
MIN_DEFAULT_SCALE = 4.0
# strategy "auto" with 200-999 training faces (most people with one to three photos), loss_metric and
# frozen BN: the whole net at a lower peak rate, exported halfway back to the base model (WiSE-FT).
# Measured on a user-like set over three seeds (docs: Fine-tuning, "Few photos per person"): +2.5
# points on 16-px faces with clean accuracy kept (98.77% vs the shipped 98.9%), where the earlier
# rule (from_level:4 at 1e-4, not interpolated) gained +2.3 and lost 0.3 on clean faces.
SMALL_DATA_LR = 5e-5
SMALL_DATA_BASE_WEIGHT = 0.5


def auto_strategy(faces: int, identities: int) -> str:
    """The strategy `strategy="auto"` picks for this many training faces and identities.

    Whole-net training (frozen BN) was best on both shifted and clean faces with ≈3,000 training
    faces (README "Fine-tuning"); with less data fewer levels learn, and below 200 faces only
    the head does (the trunk would memorise them).
    """
    if faces >= 1000 and identities >= 50:
        return "all"
    if faces >= 200 and identities >= 10:
        return "from_level:4"
    return "head"


def default_scale(classes: int) -> float:
    """AdaCos's fixed scale s = √2·ln(C − 1) for C classes (at least MIN_DEFAULT_SCALE)."""
    return max(MIN_DEFAULT_SCALE, math.sqrt(2) * math.log(max(classes - 1, 1)))


def parse_strategy(strategy: str) -> tuple[str, int]:
    """("head"|"all"|"from_level", first trained level 0..HEAD_LEVEL); "auto" is resolved by
    FinetuneConfig.resolved() once the data are known."""
    if strategy == "head":
        return "head", HEAD_LEVEL
    if strategy == "all":
        return "all", 0
    if isinstance(strategy, str) and strategy.startswith("from_level:"):
        try:
            level = int(strategy.split(":", 1)[1])
        except ValueError:
            level = -1
        if 0 <= level <= HEAD_LEVEL:
            return "from_level", level
    raise ValueError(f"strategy must be 'auto', 'head', 'all' or 'from_level:K' with K in 0..{HEAD_LEVEL}, "
                     f"got {strategy!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Every setting of a fine-tuning run, validated; None means "the strategy's default".

    The command line (`pyfacedlib finetune`) is built from these fields, and a checkpoint records
    the ones that define the run (run_settings), so a resume with other settings is refused.
    """

    strategy: str = field(default="auto", metadata={"help": f"auto (from the amount of data) | head | all | "
                                                             f"from_level:K (K = 0..{HEAD_LEVEL}, from the input)"})
    bn: str = field(default="frozen", metadata={"help": "batch norm: frozen (the affine net trains) or calibrated "
                                                        "(bn net)", "choices": BN_MODES})
    steps: int | None = field(default=None, metadata={"help": "mini-batches to train (default: per strategy)"})
    max_minutes: float | None = field(default=None, metadata={"help": "stop after this many minutes (the cosine "
                                                                      "schedule shrinks to the steps that fit)"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate (default: per strategy)"})
    schedule: str = field(default="cosine", metadata={"help": "cosine (linear warm-up, then cosine decay to lr/100) or "
                                                              "plateau (lr/10 after `patience` validations without "
                                                              "improvement)", "choices": SCHEDULES})
    warmup: float = field(default=0.05, metadata={"help": "cosine schedule: fraction of the steps spent warming up"})
    loss: str = field(default="metric", metadata={"help": "metric (dlib's loss_metric) | cosface | arcface (margin "
                                                          "softmax over a cosine class layer)", "choices": LOSSES})
    margin: float | None = field(default=None, metadata={"help": "cosface: cosine margin; arcface: angular margin in "
                                                                 "radians (default: 0.1)"})
    scale: float | None = field(default=None, metadata={"help": "cosface/arcface: logit scale s (default: AdaCos's "
                                                                "√2·ln(identities − 1), at least 4)"})
    identities_per_batch: int = field(default=5, metadata={"help": "identities in a mini-batch"})
    images_per_identity: int = field(default=5, metadata={"help": "faces of each identity in a mini-batch"})
    augment: bool = field(default=True, metadata={"help": "random crops, rotations, flips and colour shifts"})
    val_every: int | None = field(default=None, metadata={"help": "validate every N steps (default: per strategy)"})
    checkpoint_every: int | None = field(default=None, metadata={"help": "checkpoint every N steps "
                                                                         "(default: per strategy)"})
    patience: int = field(default=3, metadata={"help": "plateau schedule: validations without improvement before "
                                                       "the lr shrinks 10x"})
    lr_floor: float | None = field(default=None, metadata={"help": "stop when the lr falls below this "
                                                                   "(default: lr/1000)"})
    base_weight: float | None = field(default=None, metadata={
        "help": "WiSE-FT: export (1 - w) x the fine-tuned weights + w x the base model's (frozen BN only; 0: the "
                "fine-tuned model as trained; the threshold is fitted on the exported model; default: 0.5 where "
                "strategy auto picks its small-data setting, else 0)"})
    calibrate_threshold: bool = field(default=True, metadata={"help": "scale the exported descriptors so that the most "
                                                                      "accurate threshold on the validation pairs is "
                                                                      "dlib's 0.6"})
    head_feature_copies: int = field(default=4, metadata={"help": "head strategy: augmented copies of each "
                                                                  "face's features"})
    seed: int = field(default=0, metadata={"help": "seed of the sampler, augmentation and identity split"})
    threads: int | None = field(default=None, metadata={"help": "worker threads (default: all CPUs)"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda (dlib's cuDNN training: a CUDA build and a GPU) "
                                                          "| auto (the GPU when there is one)", "choices": DEVICES})
    resume: bool = field(default=True, metadata={"help": "continue from OUT_DIR's checkpoint when there is one"})
    progress: bool = field(default=True, metadata={"help": "progress bar"})
    cache_dir: str | None = field(default=None, metadata={"help": "aligned-chip cache "
                                                                  "(default: ~/.cache/pyfacedlib/chips)"})

    def __post_init__(self) -> None:
        if self.strategy != "auto":
            parse_strategy(self.strategy)
        for name, allowed in (("bn", BN_MODES), ("loss", LOSSES), ("schedule", SCHEDULES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.loss == "metric" and (self.margin is not None or self.scale is not None):
            raise ValueError("margin and scale belong to the margin losses (loss='cosface' or 'arcface'), "
                             "not loss_metric")
        if self.margin is not None and (not _is_number(self.margin)
                                        or not 0 <= self.margin < (1.5 if self.loss == "arcface" else 1)):
            raise ValueError(f"margin must be in [0, {1.5 if self.loss == 'arcface' else 1}), got {self.margin!r}")
        if self.base_weight is not None and (not _is_number(self.base_weight) or not 0 <= self.base_weight < 1):
            raise ValueError(f"base_weight must be a fraction in [0, 1) or None, got {self.base_weight!r}")
        if self.base_weight and self.bn != "frozen":
            raise ValueError("base_weight interpolates affine nets: it needs bn='frozen'")
        if not _is_number(self.warmup) or not 0 <= self.warmup < 1:
            raise ValueError(f"warmup must be a fraction in [0, 1), got {self.warmup!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("identities_per_batch", "images_per_identity"):
            _check_int(name, getattr(self, name), 2)
        for name, minimum in (("steps", 0), ("val_every", 1), ("checkpoint_every", 1), ("threads", 1)):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum)
        _check_int("patience", self.patience, 1)
        _check_int("head_feature_copies", self.head_feature_copies, 1)
        _check_int("seed", self.seed, 0)
        for name in ("lr", "lr_floor", "max_minutes", "scale"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or value <= 0):
                raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")

    def resolved(self, faces: int, identities: int) -> FinetuneConfig:
        """This config with strategy "auto" replaced by auto_strategy(faces, identities) — for
        200-999 faces with loss_metric and frozen BN, the small-data setting instead: the whole net,
        peak lr SMALL_DATA_LR and base_weight SMALL_DATA_BASE_WEIGHT (where not given) — and
        base_weight None by 0."""
        config = self
        if self.strategy == "auto":
            strategy = auto_strategy(faces, identities)
            if strategy.startswith("from_level") and self.loss == "metric" and self.bn == "frozen":
                config = dataclasses.replace(
                    self, strategy="all", lr=SMALL_DATA_LR if self.lr is None else self.lr,
                    base_weight=SMALL_DATA_BASE_WEIGHT if self.base_weight is None else self.base_weight)
            else:
                config = dataclasses.replace(self, strategy=strategy)
        return config if config.base_weight is not None else dataclasses.replace(config, base_weight=0.0)

    @property
    def interpolation_weight(self) -> float:
        """base_weight as a number (None, before resolved(): 0)."""
        return float(self.base_weight or 0.0)

    @property
    def kind(self) -> str:
        """"head", "from_level" or "all" (after resolved())."""
        if self.strategy == "auto":
            raise ValueError("strategy 'auto' is decided from the data: call resolved(faces, identities) first")
        return parse_strategy(self.strategy)[0]

    @property
    def first_level(self) -> int:
        """The lowest level that learns (HEAD_LEVEL for the head alone)."""
        return parse_strategy(self.strategy)[1]

    def _strategy_default(self, value: float | None, column: int) -> float:
        return value if value is not None else STRATEGY_DEFAULTS[self.kind][column]

    @property
    def learning_rate(self) -> float:
        """The peak learning rate: `lr`, else the strategy's default (HEAD_MARGIN_LR for a margin
        loss on the head alone)."""
        if self.lr is None and self.kind == "head" and self.loss != "metric":
            return HEAD_MARGIN_LR
        return float(self._strategy_default(self.lr, 0))

    @property
    def total_steps(self) -> int:
        return int(self._strategy_default(self.steps, 1))

    @property
    def validation_interval(self) -> int:
        return int(self._strategy_default(self.val_every, 2))

    @property
    def checkpoint_interval(self) -> int:
        return int(self._strategy_default(self.checkpoint_every, 3))

    @property
    def learning_rate_floor(self) -> float:
        return float(self.lr_floor if self.lr_floor is not None else self.learning_rate / 1000)

    @property
    def margin_value(self) -> float:
        """The margin loss's margin (0 for loss_metric)."""
        return float(self.margin if self.margin is not None else DEFAULT_MARGINS.get(self.loss, 0.0))

    def margin_settings(self, classes: int) -> tuple[float, float, float] | None:
        """(scale, angular margin, cosine margin) of a cosface/arcface run over `classes` identities
        (the arguments of _core.MarginLoss); None for loss_metric."""
        if self.loss == "metric":
            return None
        scale = float(self.scale if self.scale is not None else default_scale(classes))
        return (scale, self.margin_value, 0.0) if self.loss == "arcface" else (scale, 0.0, self.margin_value)

    def learning_rate_at(self, step: int, horizon: int) -> float:
        """The cosine schedule's rate before step `step` of `horizon`: linear warm-up over the first
        `warmup` fraction, then half a cosine from the peak down to peak/100."""
        peak, horizon = self.learning_rate, max(1, horizon)
        warm = max(1, round(self.warmup * horizon)) if self.warmup > 0 else 0
        if step < warm:
            return peak * (step + 1) / warm
        progress = min(1.0, (step - warm) / max(1, horizon - warm))
        return peak / 100 + (peak - peak / 100) * 0.5 * (1 + math.cos(math.pi * progress))

    @property
    def worker_threads(self) -> int:
        return int(self.threads if self.threads is not None else available_cpus())

    @property
    def trains_bn_net(self) -> bool:
        """Whether the bn_con net trains (calibrated BN below the head) rather than the affine net."""
        return self.bn == "calibrated" and self.kind != "head"

    def run_settings(self) -> dict:
        """The settings that define a run's trajectory (a checkpoint of other settings is not resumed)."""
        return {"strategy": self.strategy, "bn": self.bn, "lr": self.learning_rate, "schedule": self.schedule,
                "warmup": self.warmup, "loss": self.loss, "margin": self.margin_value,
                "scale": self.scale, "head_feature_copies": self.head_feature_copies,
                "identities_per_batch": self.identities_per_batch, "images_per_identity": self.images_per_identity,
                "augment": self.augment, "seed": self.seed}


def _is_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float, np.floating)) and math.isfinite(value)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


@dataclass
class FinetuneResult:
    """Where a fine-tuning run left its outputs, and how it went."""

    affine_model: str          # load with FaceEmbedder or dlib.face_recognition_model_v1
    bn_model: str              # bn_con training net to continue from
    history_path: str
    curve_path: str
    best_step: int
    best_validation: dict | None
    steps: int
    minutes: float
    resumed_from_step: int
    train_faces: int
    train_identities: int
    validation_identities: int
    skipped_images: dict = field(default_factory=dict)
    skipped_identities: dict = field(default_factory=dict)
    device: str = "cpu"        # where the steps ran: "cpu" or "cuda"
    strategy: str = ""         # the strategy that ran ("auto" resolved)
    loss: str = "metric"
    descriptor_scale: float = 1.0   # the factor applied so that dlib's 0.6 threshold fits (calibrate_threshold)
    threshold: float | None = None  # the exported model's most accurate threshold on the validation pairs
    base_weight: float = 0.0        # the base model's share of the exported weights (FinetuneConfig.base_weight)
    exported_validation: dict | None = None  # the exported model's validation (= best_validation unless interpolated)


# ------------------------------------------------------------------------------------------------
# Step 1: data


@dataclass
class RunData:
    """The faces a run trains and validates on, and everything that was left out of them."""

    train: FaceSet
    validation: FaceSet | None
    skipped_images: dict[str, str]
    skipped_identities: dict[str, str]


def prepare_data(train: FaceInput, val: FaceInput | None, config: FinetuneConfig) -> RunData:
    """Training faces and held-out validation identities (given, or a fifth of the training identities).

    Identities with fewer than 2 faces are left out and listed; fewer than 2 usable training
    identities is a ValueError.
    """
    faces = load_faces(train, config.cache_dir, progress=config.progress).with_min_images(2)
    validation = (load_faces(val, config.cache_dir, progress=config.progress).with_min_images(2)
                  if val is not None else None)
    training = faces
    if validation is None and len(faces.identities) >= 4:
        train_ids, val_ids = identity_split(faces.identities, [0.8, 0.2], seed=config.seed)
        if len(val_ids) < 2:
            train_ids, val_ids = train_ids[:-2 + len(val_ids)], val_ids + train_ids[-2 + len(val_ids):]
        training, validation = faces.subset(train_ids), faces.subset(val_ids)
    if len(training.identities) < 2:
        raise ValueError(
            f"training needs at least 2 identities with at least 2 images each; found {len(training.identities)} "
            f"(skipped identities: {faces.skipped_identities or 'none'})")
    if validation is not None and set(validation.identities) & set(training.identities):
        raise ValueError("validation identities must not appear in the training set")
    if validation is not None and len(validation.identities) < 2:
        validation = None
    return RunData(training, validation, faces.skipped, faces.skipped_identities)


VALIDATION_SAME_PAIRS = 3000  # same-identity pairs drawn for validation (as many different ones)


def validation_pairs(labels: np.ndarray, max_pairs: int = VALIDATION_SAME_PAIRS,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deprecated: use pyfacedlib.evaluate.sample_pairs (this returns its (first, second, same))."""
    warnings.warn("pyfacedlib._finetune.validation_pairs is deprecated: use pyfacedlib.evaluate.sample_pairs",
                  DeprecationWarning, stacklevel=2)
    pairs = sample_pairs(labels, max_pairs, seed, folds=1)
    return pairs.first, pairs.second, pairs.same


@dataclass
class ValidationSet:
    """Held-out faces, the verification pairs drawn from them (evaluate.sample_pairs, 10 folds), and
    fixed loss_metric mini-batches."""

    faces: FaceSet
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    fold: np.ndarray
    batch_chips: np.ndarray
    batch_labels: list[int]
    batch_size: int

    @classmethod
    def build(cls, faces: FaceSet, identities_per_batch: int, images_per_identity: int, seed: int) -> ValidationSet:
        """Pairs and loss batches for `faces` (batches: distinct identities, >= 2 faces each)."""
        pairs = sample_pairs(faces.labels, VALIDATION_SAME_PAIRS, seed, folds=10)
        counts = np.unique(faces.labels, return_counts=True)[1]
        per_identity = int(max(2, min(images_per_identity, np.sort(counts)[-min(len(counts), identities_per_batch)])))
        identities = min(identities_per_batch, len(counts))
        batches = [b for b in identity_batches(faces.labels.tolist(), identities, per_identity, seed=seed)
                   if 2 <= len(set(faces.labels[b].tolist())) < len(b)]
        order = np.concatenate(batches) if batches else np.zeros(0, int)
        ids = {name: i for i, name in enumerate(faces.identities)}
        return cls(faces, pairs.first, pairs.second, pairs.same, pairs.fold, np.ascontiguousarray(faces.chips[order]),
                   [ids[n] for n in faces.labels[order].tolist()], identities * per_identity)


def pair_metrics(descriptors: np.ndarray, validation: ValidationSet) -> dict:
    """Verification accuracy (the pairs' 10 folds), accuracy at 0.6, VAL@FAR=1e-3 and the best
    threshold of the validation faces' descriptors."""
    descriptors = np.asarray(descriptors, np.float64)
    d = np.linalg.norm(descriptors[validation.first] - descriptors[validation.second], axis=1)
    report = verification(d, validation.same, fold_ids=validation.fold)
    return {"accuracy": report.accuracy_mean, "accuracy_at_0_6": report.accuracy_at_0_6,
            "val_at_far_1e_3": report.val_at_far_1e_3, "threshold": report.best_threshold, "pairs": int(len(d))}


def validate(trainer: Any, validation: ValidationSet, threads: int) -> dict:
    """pair_metrics of the trainer's current model, and loss_metric's own loss (dlib's, hard
    negatives included) over fixed validation mini-batches."""
    metrics = pair_metrics(trainer.embedder(threads).embed_chips(validation.faces.chips, 0, 0), validation)
    loss = (trainer.validation_loss(validation.batch_chips, validation.batch_labels, validation.batch_size)
            if len(validation.batch_labels) else float("nan"))
    return {**metrics, "loss": float(loss)}


def class_centres(model: str, chips: np.ndarray, labels: list[int], classes: int, threads: int,
                  device: str = "cpu") -> np.ndarray:
    """Weight imprinting: each identity's mean unit-length descriptor under `model` (embedded on
    `device`), normalised ((classes, 128) float32): the margin runs' class layer starts where the
    faces already are."""
    descriptors = FaceEmbedder(model, threads=threads, device=device).embed_chips(chips).astype(np.float64)
    descriptors /= np.linalg.norm(descriptors, axis=1, keepdims=True)
    sums = np.zeros((classes, descriptors.shape[1]))
    np.add.at(sums, np.asarray(labels), descriptors)
    return np.ascontiguousarray(sums / np.linalg.norm(sums, axis=1, keepdims=True), np.float32)


# ------------------------------------------------------------------------------------------------
# Step 2: the starting model


def starting_model(base: str, data: RunData, config: FinetuneConfig, out: Path) -> str:
    """The net the trainer loads: the affine base itself, or (calibrated BN) its bn net calibrated on
    the training faces (kept in out/ so a resumed run starts from the same one)."""
    if not config.trains_bn_net:
        return base
    from .convert import convert_affine_to_bn

    start = out / "base_calibrated_bn.dat"
    if not (config.resume and start.exists()):
        convert_affine_to_bn(base, start, calibration=data.train.chips, threads=config.worker_threads)
    return str(start)


# ------------------------------------------------------------------------------------------------
# Step 3: the training loop


CHECKPOINT_FORMAT = 2  # 2: checkpoint.json records the size and sha256 of its checkpoint.bin


def _file_record(data: bytes) -> dict:
    """{"size", "sha256"} of a file's bytes (what checkpoint.json and history.json record)."""
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _fingerprint(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


class TrainingRun:
    """The C++ trainer with what a run keeps around it: history, the best model so far (by
    validation accuracy, then loss), the plateau schedule and checkpoints in `out`."""

    def __init__(self, base: str, start_model: str, data: RunData, config: FinetuneConfig, out: Path) -> None:
        self.config, self.out, self.data, self.base = config, out, data, base
        names = {name: i for i, name in enumerate(data.train.identities)}
        labels = [names[name] for name in data.train.labels.tolist()]
        self.settings = {**config.run_settings(), "base": _fingerprint(Path(base).read_bytes()),
                         "data": _fingerprint(data.train.chips.tobytes(), labels)}
        self.device, module = resolve_device(config.device)
        classes = len(data.train.identities)
        margin = config.margin_settings(classes)
        self.margin_loss = module.MarginLoss(*margin) if margin is not None else None
        centres = (class_centres(base, data.train.chips, labels, classes, config.worker_threads, self.device)
                   if margin else None)
        self.trainer = module.FaceTrainer(start_model, config.trains_bn_net, data.train.chips, labels,
                                        config.first_level, config.learning_rate, config.identities_per_batch,
                                        config.images_per_identity, config.augment, config.head_feature_copies,
                                        config.seed, config.worker_threads,
                                        margin_loss=self.margin_loss, class_centres=centres)
        self.validation = (ValidationSet.build(data.validation, config.identities_per_batch, config.images_per_identity,
                                               config.seed) if data.validation is not None else None)
        self.history: list[dict] = []
        self.best: dict | None = None
        self.horizon = config.total_steps  # the cosine schedule's length (shrinks when max_minutes binds)
        self.exported_best: dict | None = None  # the validation record of the model export() wrote
        self.best_files: dict | None = None  # size and sha256 of best_affine.dat (and best_bn.dat) as written
        self.resumed_from = 0
        self.checkpoint_bin, self.checkpoint_json = out / "checkpoint.bin", out / "checkpoint.json"
        self.previous_bin = out / "checkpoint.prev.bin"  # the .bin of the checkpoint before the last one
        self.bin_record: dict | None = None  # size and sha256 of checkpoint.bin as this run last wrote or read it
        self.best_affine, self.best_bn = out / "best_affine.dat", out / "best_bn.dat"
        if config.resume:
            self._restore()

    def _read_state(self) -> dict | None:
        """checkpoint.json as a dict (None when there is none); CheckpointError when unreadable."""
        if not self.checkpoint_json.exists():
            if self.checkpoint_bin.exists():
                warnings.warn(f"{self.checkpoint_bin} has no checkpoint.json beside it (the run stopped while writing "
                              "its first checkpoint): starting from step 0", RuntimeWarning, stacklevel=4)
            return None
        try:
            state = json.loads(self.checkpoint_json.read_text())
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{self.checkpoint_json}: unreadable ({_one_line(e)}); delete the checkpoint "
                                  "files or use resume=False") from e
        if not isinstance(state, dict) or not {"config", "history", "best"} <= state.keys():
            raise CheckpointError(f"{self.checkpoint_json}: not a pyfacedlib checkpoint; delete the checkpoint files "
                                  "or use resume=False")
        return state

    def _checkpoint_bytes(self, state: dict) -> tuple[bytes, Path]:
        """The .bin that checkpoint.json was written with: checkpoint.bin, or (the run stopped between
        writing the two files) the previous checkpoint's .bin when that is the one the JSON records."""
        def read(path: Path) -> bytes | None:
            try:
                return path.read_bytes()
            except FileNotFoundError:
                return None
            except OSError as e:
                raise CheckpointError(f"{path}: unreadable ({_one_line(e)}); delete the checkpoint files or use "
                                      "resume=False") from e

        data, record = read(self.checkpoint_bin), state.get("bin")
        if record is None:  # written before checkpoints recorded their .bin: checked by its step only
            if data is None:
                raise CheckpointError(f"{self.checkpoint_bin}: missing, but {self.checkpoint_json.name} is there; "
                                      "delete the checkpoint files or use resume=False")
            return data, self.checkpoint_bin
        if data is not None and _file_record(data) == record:
            return data, self.checkpoint_bin
        previous = read(self.previous_bin)
        if previous is not None and _file_record(previous) == record:
            warnings.warn(f"{self.checkpoint_bin} is not the one {self.checkpoint_json.name} was written with (a run "
                          f"stopped between writing the two): resuming from the consistent older state in "
                          f"{self.previous_bin.name} (step {state.get('step')})", RuntimeWarning, stacklevel=4)
            return previous, self.previous_bin
        found = "missing" if data is None else f"{len(data)} bytes, sha256 {_file_record(data)['sha256'][:12]}"
        raise CheckpointError(f"{self.checkpoint_bin}: corrupt or not the checkpoint {self.checkpoint_json.name} "
                              f"records ({found}; expected {record.get('size')} bytes, sha256 "
                              f"{str(record.get('sha256'))[:12]}); delete the checkpoint files or use resume=False")

    def _restore(self) -> None:
        """Resumes from the checkpoint in `out` when there is one: checkpoint.json and the .bin it
        records (size and sha256), checked against each other and against this run's settings."""
        state = self._read_state()
        if state is None:
            return
        if state.get("config") != self.settings:
            raise ValueError(f"{self.checkpoint_json} belongs to a different run (other settings or data); "
                             "use another output_dir or resume=False")
        data, source = self._checkpoint_bytes(state)
        try:
            self.trainer.restore(data)
        except Exception as e:  # the C++ reader: truncated or not this run's trainer state
            raise CheckpointError(f"{source}: cannot be restored ({_one_line(e)}); delete the checkpoint files or "
                                  "use resume=False") from e
        history = state["history"]
        step = state.get("step", max([h["step"] for h in history if h.get("kind") == "train"] or [0]))
        if self.trainer.step != step:
            raise CheckpointError(f"{source}: holds step {self.trainer.step} but {self.checkpoint_json.name} records "
                                  f"step {step}; delete the checkpoint files or use resume=False")
        self.history, self.best, self.resumed_from = history, state["best"], self.trainer.step
        self.best_files = state.get("best_files")
        self.bin_record = _file_record(data) if source == self.checkpoint_bin else None

    def save_checkpoint(self) -> None:
        """Trainer and sampler state, history and best: checkpoint.bin, then checkpoint.json recording
        its size and sha256 (each written atomically; the previous .bin is kept as checkpoint.prev.bin
        until the new JSON is written, so a stop between the two leaves a consistent older state)."""
        data = self.trainer.checkpoint()
        record = _file_record(data)
        if record != self.bin_record or not self.checkpoint_bin.exists():  # else: that very .bin is there
            if self.checkpoint_bin.exists():
                os.replace(self.checkpoint_bin, self.previous_bin)
            _atomic.write_bytes(self.checkpoint_bin, data)
            self.bin_record = record
        _atomic.write_text(self.checkpoint_json, json.dumps(
            {"format": CHECKPOINT_FORMAT, "config": self.settings, "step": self.trainer.step,
             "bin": record, "history": self.history, "best": self.best, "best_files": self.best_files},
            indent=1))

    def best_model_bytes(self) -> tuple[bytes, bytes | None] | None:
        """(best_affine.dat, best_bn.dat or None) as the checkpoint's best record says they were
        written; None when no model was validated. CheckpointError when a file is missing or differs."""
        if self.best is None:
            return None
        affine = self._best_file("affine", self.best_affine)
        return affine, self._best_file("bn", self.best_bn) if self.config.trains_bn_net else None

    def _best_file(self, kind: str, path: Path) -> bytes:
        best = self.best or {}
        try:
            data = path.read_bytes()
        except OSError as e:
            raise CheckpointError(f"{path}: the best model (step {best.get('step')}) that {self.checkpoint_json.name} "
                                  f"records cannot be read ({_one_line(e)}); use resume=False to train anew") from e
        expected = (self.best_files or {}).get(kind)
        if expected is not None and _file_record(data) != expected:
            raise CheckpointError(f"{path}: not the best model (step {best.get('step')}) that "
                                  f"{self.checkpoint_json.name} records (size or sha256 differ); use resume=False "
                                  "to train anew")
        return data

    def run_validation(self) -> None:
        """Validates the current model; keeps it (atomically) when it is the best so far."""
        if self.validation is None:
            return
        metrics = validate(self.trainer, self.validation, self.config.worker_threads)
        self.history.append({"kind": "validation", "step": self.trainer.step, "lr": self.trainer.learning_rate,
                             **metrics})
        if self.best is None or (metrics["accuracy"], -metrics["loss"]) > (self.best["accuracy"], -self.best["loss"]):
            affine = self.trainer.affine_bytes()
            _atomic.write_bytes(self.best_affine, affine)
            files = {"affine": _file_record(affine)}
            if self.config.trains_bn_net:
                bn = self.trainer.bn_bytes()
                _atomic.write_bytes(self.best_bn, bn)
                files["bn"] = _file_record(bn)
            self.best, self.best_files = {"step": self.trainer.step, **metrics}, files

    def train(self) -> None:
        """Steps until `steps`, `max_minutes` or the lr floor; validation, schedule and checkpoints
        as configured."""
        from tqdm import tqdm

        config, trainer = self.config, self.trainer
        started = time.perf_counter()
        if self.validation is not None and not any(h["kind"] == "validation" for h in self.history):
            self.run_validation()  # the starting point, step 0
        total, every_val, every_ckpt = config.total_steps, config.validation_interval, config.checkpoint_interval
        bar = tqdm(total=total, initial=trainer.step, desc=f"finetune {config.strategy}/{config.bn}/{config.loss}",
                   unit="step", disable=not config.progress)
        chunk = 50 if config.kind == "head" else 1
        stale = 0
        first_step, timed_from = trainer.step, time.perf_counter()
        while trainer.step < total:
            elapsed = time.perf_counter() - started
            if config.max_minutes is not None and elapsed / 60 >= config.max_minutes:
                break
            if config.schedule == "plateau" and trainer.learning_rate < config.learning_rate_floor:
                break
            if config.schedule == "cosine":
                self.horizon = total
                if config.max_minutes is not None and trainer.step > first_step:
                    per_step = (time.perf_counter() - timed_from) / (trainer.step - first_step)
                    fit = trainer.step + int((config.max_minutes * 60 - elapsed) / per_step)
                    self.horizon = max(trainer.step + 1, min(total, fit))
                trainer.learning_rate = config.learning_rate_at(trainer.step, self.horizon)
            n = min(chunk, total - trainer.step, every_val - trainer.step % every_val,
                    every_ckpt - trainer.step % every_ckpt)
            loss = trainer.train(n)
            for _ in range(n):
                _faults.point("step")  # the fault-injection tests' "after N steps"
            if not np.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at step {trainer.step}; lower the learning rate")
            self.history.append({"kind": "train", "step": trainer.step, "loss": float(loss),
                                 "lr": trainer.learning_rate})
            bar.update(n)
            if trainer.step % every_val == 0:
                previous = self.best["step"] if self.best else None
                self.run_validation()
                stale = 0 if self.best is None or self.best["step"] != previous else stale + 1
                if config.schedule == "plateau" and stale >= config.patience:
                    trainer.learning_rate = trainer.learning_rate / 10
                    stale = 0
            last_val = next((h for h in reversed(self.history) if h["kind"] == "validation"), None)
            bar.set_postfix(loss=f"{loss:.4f}", lr=f"{trainer.learning_rate:.2g}",
                            val=f"{100 * last_val['accuracy']:.2f}%" if last_val else "-")
            if trainer.step % every_ckpt == 0:
                self.save_checkpoint()
        bar.close()
        if self.validation is not None and (not self.history or self.history[-1].get("kind") != "validation"):
            self.run_validation()
        self.save_checkpoint()


# ------------------------------------------------------------------------------------------------
# Step 4: export


def _plot(history: list[dict], path: Path) -> None:
    fig, (ax1, ax2) = _plots.pyplot().subplots(1, 2, figsize=(10, 4))
    train = [h for h in history if h["kind"] == "train"]
    val = [h for h in history if h["kind"] == "validation"]
    ax1.plot([h["step"] for h in train], [h["loss"] for h in train], label="training loss")
    if val:
        ax1.plot([h["step"] for h in val], [h["loss"] for h in val], "o-", label="validation hinge loss")
        ax2.plot([h["step"] for h in val], [100 * h["accuracy"] for h in val], "o-", label="validation accuracy")
        ax2.plot([h["step"] for h in val], [100 * h["val_at_far_1e_3"] for h in val], "s-", label="VAL@FAR=1e-3")
    ax1.set_xlabel("step")
    ax1.legend()
    ax2.set_xlabel("step")
    ax2.set_ylabel("%")
    if val:
        ax2.legend()
    fig.tight_layout()
    _plots.save_figure(fig, path, dpi=100)


def fit_threshold(run: TrainingRun, embed: Any = None) -> tuple[float, float | None]:
    """(descriptor scale to apply, most accurate threshold of the exported model) on the validation
    pairs (measured when that model was validated; the training faces' pairs when it was not).

    A margin loss trains angles and leaves the descriptors' length free, so its exported model's
    best threshold is wherever training left it; loss_metric's drifts too (0.66 after 400 steps on
    16-px faces). With config.calibrate_threshold the model's descriptors are scaled so that it is
    dlib's 0.6 again (distances scale linearly, so accuracy at the best threshold is unchanged);
    otherwise the threshold is only reported (scale 1). embed: chips -> descriptors of the exported
    model when it is not the trainer's (an interpolated one)."""
    config = run.config
    threshold = exported_best.get("threshold") if (exported_best := run.exported_best) else None
    if threshold is None:  # the exported model (the trainer's current one) was not validated: training pairs
        labels = run.data.train.labels[:2000]
        try:
            pairs = sample_pairs(labels, VALIDATION_SAME_PAIRS, config.seed, folds=1)
        except ValueError:  # no pair of one kind among them
            return 1.0, None
        chips = run.data.train.chips[:2000]
        descriptors = (embed(chips) if embed is not None
                       else run.trainer.embedder(config.worker_threads).embed_chips(chips, 0, 0))
        threshold = best_threshold(np.linalg.norm(descriptors[pairs.first].astype(np.float64)
                                                  - descriptors[pairs.second], axis=1), pairs.same)
    if not config.calibrate_threshold or not np.isfinite(threshold) or threshold <= 0:
        return 1.0, float(threshold)
    return float(DLIB_THRESHOLD / threshold), DLIB_THRESHOLD


def interpolate(run: TrainingRun, from_best: bool) -> tuple[Path, FaceEmbedder]:
    """WiSE-FT (config.base_weight = w): interpolated_affine.dat, the affine net (1 - w) x the
    exported model (best_affine.dat, or the last one, written to last_affine.dat) + w x the base
    model, unscaled; validated (run.exported_best becomes its record, so its threshold is fitted on
    it). Derived only from files, so an export run again writes the same bytes."""
    config, out = run.config, run.out
    tuned = run.best_affine
    if not from_best:
        tuned = out / "last_affine.dat"
        _atomic.write_bytes(tuned, run.trainer.affine_bytes())
    path = out / "interpolated_affine.dat"
    _atomic.write_bytes(path, core.interpolated_net(str(run.base), str(tuned), 1.0 - config.interpolation_weight))
    embedder = FaceEmbedder(path, threads=config.worker_threads, device=run.device)
    if run.validation is not None:
        step = (run.best or {}).get("step", run.trainer.step)
        run.exported_best = {"step": step, "base_weight": config.interpolation_weight,
                             **pair_metrics(embedder.embed_chips(run.validation.faces.chips), run.validation)}
    else:
        run.exported_best = None
    return path, embedder


def _scaled(data: bytes, path: Path, descriptor_scale: float) -> bytes:
    """A model file's bytes (`data`, read from `path`) with its descriptors scaled; the file is never changed."""
    return data if descriptor_scale == 1.0 else core.scaled_descriptor_net(str(path), descriptor_scale)


def export(run: TrainingRun, started: float) -> FinetuneResult:
    """finetuned_affine.dat (the best model, else the last), finetuned_bn.dat, history.json, training_curve.png.
    `started`: time.perf_counter() when training began (the minutes reported include the export).

    Derived only from the checkpoint's state, so exporting again (a rerun of a finished run, or a
    run stopped in the middle of its export) writes the same files: the best model is read from
    best_affine.dat / best_bn.dat (checked against the sizes and sha256 the checkpoint recorded,
    and kept), scaled by the descriptor scale its validation threshold gives, and each output is
    written atomically; history.json, written last, records what was exported. Without a
    validated model the last one goes from the trainer to its files directly, already scaled.
    With config.base_weight the exported model is the interpolation of that model with the base
    (interpolate), validated and scaled on its own."""
    out, config, data, trainer = run.out, run.config, run.data, run.trainer
    affine_out, bn_out = out / "finetuned_affine.dat", out / "finetuned_bn.dat"
    best = run.best_model_bytes()
    run.exported_best = run.best if best is not None else None
    bn: bytes | None
    if config.interpolation_weight:  # WiSE-FT: the interpolated net, its threshold fitted on it
        path, embedder = interpolate(run, best is not None)
        descriptor_scale, threshold = fit_threshold(run, embedder.embed_chips)
        affine, bn = _scaled(path.read_bytes(), path, descriptor_scale), None
    elif best is not None:
        descriptor_scale, threshold = fit_threshold(run)
        best_affine, best_bn = best
        affine = _scaled(best_affine, run.best_affine, descriptor_scale)
        bn = _scaled(best_bn, run.best_bn, descriptor_scale) if best_bn is not None else None
    else:
        descriptor_scale, threshold = fit_threshold(run)
        affine = trainer.affine_bytes(descriptor_scale)
        bn = trainer.bn_bytes(descriptor_scale) if config.trains_bn_net else None
    _atomic.write_bytes(affine_out, affine)
    _faults.point("export")  # the fault-injection tests' "during export": one file written, not the others
    if bn is not None:
        _atomic.write_bytes(bn_out, bn)
    else:  # the bn net to continue from: calibrated on (up to 1000 of) the training faces
        from .convert import convert_affine_to_bn

        convert_affine_to_bn(affine_out, bn_out, calibration=data.train.chips[:1000], threads=config.worker_threads)
    minutes = (time.perf_counter() - started) / 60
    history_path, curve_path = out / "history.json", out / "training_curve.png"
    validation_identities = len(data.validation.identities) if data.validation is not None else 0
    best_step = run.best["step"] if run.best else trainer.step
    exported = {"model": "best" if best is not None else "last", "step": best_step,
                "base_weight": config.interpolation_weight, "validation": run.exported_best,
                "descriptor_scale": descriptor_scale, "threshold": threshold,
                "affine": {"path": affine_out.name, **_file_record(affine)},
                "bn": {"path": bn_out.name, **_file_record(bn_out.read_bytes())}}
    summary = {"config": run.settings, "device": run.device, "best": run.best, "history": run.history,
               "minutes": minutes, "descriptor_scale": descriptor_scale, "threshold": threshold,
               "exported": exported,
               "train_faces": len(data.train), "train_identities": len(data.train.identities),
               "validation_identities": validation_identities,
               "skipped_images": data.skipped_images, "skipped_identities": data.skipped_identities}
    _plot(run.history, curve_path)
    _atomic.write_text(history_path, json.dumps(summary, indent=1))
    return FinetuneResult(
        affine_model=str(affine_out), bn_model=str(bn_out), history_path=str(history_path), curve_path=str(curve_path),
        best_step=best_step, best_validation=run.best, steps=trainer.step,
        minutes=minutes, resumed_from_step=run.resumed_from, train_faces=len(data.train),
        train_identities=len(data.train.identities), validation_identities=validation_identities,
        skipped_images=data.skipped_images, skipped_identities=data.skipped_identities, device=run.device,
        strategy=config.strategy, loss=config.loss, descriptor_scale=descriptor_scale, threshold=threshold,
        base_weight=config.interpolation_weight, exported_validation=run.exported_best)


def finetune(train: FaceInput, output_dir: str | os.PathLike, base_model: str | os.PathLike | None = None,
             val: FaceInput | None = None, config: FinetuneConfig | None = None, **options: Any) -> FinetuneResult:
    """Fine-tunes the face model on `train` and writes to `output_dir`:
    finetuned_affine.dat (the best model by validation; dlib.face_recognition_model_v1 loads it),
    finetuned_bn.dat (bn_con training net to continue from), history.json, training_curve.png,
    best_affine.dat (best_bn.dat: the best model unscaled) and checkpoint files (checkpoint.json
    records the size and sha256 of its checkpoint.bin; a rerun with resume=True continues from the
    last one, and a rerun of a finished run exports the same files again).

    train / val: identity folders (root/Name/*.jpg; photos are aligned through the chip cache, ready
    150x150 chips are used as they are), an IdentityDataset, a FaceSet, or (chips, labels). When val
    is None, a fifth of the identities (at least 2) is held out. Settings: a FinetuneConfig, or its
    fields as keywords (`finetune(train, out, strategy="all", steps=500)`); see FinetuneConfig for
    each and its default (strategy "auto" is decided from the number of faces and identities). The
    learning rate follows the schedule (default: warm-up, then cosine decay); the run stops at
    `steps` or `max_minutes` (plateau schedule: also when the rate falls below `lr_floor`). With
    loss="cosface"/"arcface" a cosine class layer, imprinted from the identities' mean descriptors,
    trains with the net and is left out of the export. With calibrate_threshold (default) the
    exported descriptors are scaled so that dlib's 0.6 is the most accurate threshold on the
    validation identities. With base_weight=w (frozen BN) the export is WiSE-FT's interpolation
    (1 - w) x the fine-tuned weights + w x the base model's, which keeps more of the base model's
    accuracy on faces unlike the training set (docs: Fine-tuning, "Few photos per person").
    With strategy="head" the trunk runs once per image and per augmented copy and only the head
    trains, on cached 256-D features; the batch-norm mode then only decides how the bn output file
    is made.
    """
    if config is not None and options:
        raise TypeError("give either a FinetuneConfig or its fields as keywords, not both")
    if config is None:
        known = {f.name for f in dataclasses.fields(FinetuneConfig)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown fine-tuning option(s) {unknown}; FinetuneConfig has {sorted(known)}")
        config = FinetuneConfig(**options)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = str(base_model) if base_model is not None else models.path(models.FACE_RECOGNITION)
    if core.net_kind(base) != "affine":  # ModelFormatError for anything that is not a face net
        raise ValueError(f"{base}: base_model must be an affine testing net "
                         "(export a bn net with convert_bn_to_affine)")
    data = prepare_data(train, val, config)
    config = config.resolved(len(data.train), len(data.train.identities))
    run = TrainingRun(base, starting_model(base, data, config, out), data, config, out)
    started = time.perf_counter()
    run.train()
    return export(run, started)
