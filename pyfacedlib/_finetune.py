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
steps in C++ with the GIL released, validation, best model, plateau schedule, checkpoints) ->
export (affine and bn files, history, curve).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import _atomic, _plots, models
from ._native import DEVICES, core, resolve_device
from ._system import available_cpus
from .datasets import identity_split
from .evaluate import verification
from .faces import FaceInput, FaceSet, identity_batches, load_faces

HEAD_LEVEL = core.NUM_LEVELS - 1
BN_MODES = ("frozen", "calibrated")
# per kind of strategy: (learning rate, steps, validate every, checkpoint every)
STRATEGY_DEFAULTS = {
    "head": (0.01, 2000, 200, 500),
    "from_level": (0.0001, 300, 50, 25),
    "all": (0.00005, 300, 50, 25),
}


def parse_strategy(strategy: str) -> tuple[str, int]:
    """("head"|"all"|"from_level", first trained level 0..HEAD_LEVEL)."""
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
    raise ValueError(f"strategy must be 'head', 'all' or 'from_level:K' with K in 0..{HEAD_LEVEL}, got {strategy!r}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Every setting of a fine-tuning run, validated; None means "the strategy's default".

    The command line (`pyfacedlib finetune`) is built from these fields, and a checkpoint records
    the ones that define the run (run_settings), so a resume with other settings is refused.
    """

    strategy: str = field(default="head", metadata={"help": f"head | all | from_level:K (K = 0..{HEAD_LEVEL}, from the input)"})
    bn: str = field(default="frozen", metadata={"help": "batch norm: frozen (the affine net trains) or calibrated (bn net)",
                                                "choices": BN_MODES})
    steps: int | None = field(default=None, metadata={"help": "mini-batches to train (default: per strategy)"})
    max_minutes: float | None = field(default=None, metadata={"help": "stop after this many minutes"})
    lr: float | None = field(default=None, metadata={"help": "learning rate (default: per strategy)"})
    identities_per_batch: int = field(default=5, metadata={"help": "identities in a mini-batch"})
    images_per_identity: int = field(default=5, metadata={"help": "faces of each identity in a mini-batch"})
    augment: bool = field(default=True, metadata={"help": "random crops, rotations, flips and colour shifts"})
    val_every: int | None = field(default=None, metadata={"help": "validate every N steps (default: per strategy)"})
    checkpoint_every: int | None = field(default=None, metadata={"help": "checkpoint every N steps (default: per strategy)"})
    patience: int = field(default=3, metadata={"help": "validations without improvement before the lr shrinks 10x"})
    lr_floor: float | None = field(default=None, metadata={"help": "stop when the lr falls below this (default: lr/1000)"})
    head_feature_copies: int = field(default=4, metadata={"help": "head strategy: augmented copies of each face's features"})
    seed: int = field(default=0, metadata={"help": "seed of the sampler, augmentation and identity split"})
    threads: int | None = field(default=None, metadata={"help": "worker threads (default: all CPUs)"})
    device: str = field(default="auto", metadata={"help": "cpu | cuda (dlib's cuDNN training: a CUDA build and a GPU) "
                                                          "| auto (the GPU when there is one)", "choices": DEVICES})
    resume: bool = field(default=True, metadata={"help": "continue from OUT_DIR's checkpoint when there is one"})
    progress: bool = field(default=True, metadata={"help": "progress bar"})
    cache_dir: str | None = field(default=None, metadata={"help": "aligned-chip cache (default: ~/.cache/pyfacedlib/chips)"})

    def __post_init__(self) -> None:
        parse_strategy(self.strategy)
        if self.bn not in BN_MODES:
            raise ValueError(f"bn must be one of {BN_MODES}, got {self.bn!r}")
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
        for name in ("lr", "lr_floor", "max_minutes"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a finite number > 0 or None, got {value!r}")

    @property
    def kind(self) -> str:
        """"head", "from_level" or "all"."""
        return parse_strategy(self.strategy)[0]

    @property
    def first_level(self) -> int:
        """The lowest level that learns (HEAD_LEVEL for the head alone)."""
        return parse_strategy(self.strategy)[1]

    def _strategy_default(self, value: float | None, column: int) -> float:
        return value if value is not None else STRATEGY_DEFAULTS[self.kind][column]

    @property
    def learning_rate(self) -> float:
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
    def worker_threads(self) -> int:
        return int(self.threads if self.threads is not None else available_cpus())

    @property
    def trains_bn_net(self) -> bool:
        """Whether the bn_con net trains (calibrated BN below the head) rather than the affine net."""
        return self.bn == "calibrated" and self.kind != "head"

    def run_settings(self) -> dict:
        """The settings that define a run's trajectory (a checkpoint of other settings is not resumed)."""
        return {"strategy": self.strategy, "bn": self.bn, "lr": self.learning_rate,
                "head_feature_copies": self.head_feature_copies, "identities_per_batch": self.identities_per_batch,
                "images_per_identity": self.images_per_identity, "augment": self.augment, "seed": self.seed}


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
    validation = load_faces(val, config.cache_dir, progress=config.progress).with_min_images(2) if val is not None else None
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


def validation_pairs(labels: np.ndarray, max_pairs: int = 3000, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first, second, issame): every same-identity pair (at most max_pairs, sampled) and as many different ones."""
    rng = np.random.default_rng(seed)
    i, j = np.triu_indices(len(labels), 1)
    same = labels[i] == labels[j]
    pos = np.flatnonzero(same)
    neg = np.flatnonzero(~same)
    pos = rng.choice(pos, min(len(pos), max_pairs), replace=False)
    neg = rng.choice(neg, min(len(neg), len(pos)), replace=False)
    pick = np.concatenate([pos, neg])
    pick = pick[rng.permutation(len(pick))]
    return i[pick], j[pick], same[pick]


@dataclass
class ValidationSet:
    """Held-out faces, the verification pairs drawn from them, and fixed loss_metric mini-batches."""

    faces: FaceSet
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    batch_chips: np.ndarray
    batch_labels: list[int]
    batch_size: int

    @classmethod
    def build(cls, faces: FaceSet, identities_per_batch: int, images_per_identity: int, seed: int) -> "ValidationSet":
        """Pairs and loss batches for `faces` (batches: distinct identities, >= 2 faces each)."""
        first, second, same = validation_pairs(faces.labels, seed=seed)
        counts = np.unique(faces.labels, return_counts=True)[1]
        per_identity = int(max(2, min(images_per_identity, np.sort(counts)[-min(len(counts), identities_per_batch)])))
        identities = min(identities_per_batch, len(counts))
        batches = [b for b in identity_batches(faces.labels.tolist(), identities, per_identity, seed=seed)
                   if 2 <= len(set(faces.labels[b].tolist())) < len(b)]
        order = np.concatenate(batches) if batches else np.zeros(0, int)
        ids = {name: i for i, name in enumerate(faces.identities)}
        return cls(faces, first, second, same, np.ascontiguousarray(faces.chips[order]),
                   [ids[n] for n in faces.labels[order].tolist()], identities * per_identity)


def validate(trainer: Any, validation: ValidationSet, threads: int) -> dict:
    """Verification accuracy (10 interleaved folds) and VAL@FAR=1e-3 on the validation pairs, and
    loss_metric's own loss (dlib's, hard negatives included) over fixed validation mini-batches."""
    descriptors = trainer.embedder(threads).embed_chips(validation.faces.chips, 0, 0).astype(np.float64)
    d = np.linalg.norm(descriptors[validation.first] - descriptors[validation.second], axis=1)
    report = verification(d, validation.same, fold_ids=np.arange(len(d)) % 10)
    loss = (trainer.validation_loss(validation.batch_chips, validation.batch_labels, validation.batch_size)
            if len(validation.batch_labels) else float("nan"))
    return {"accuracy": report.accuracy_mean, "accuracy_at_0_6": report.accuracy_at_0_6,
            "val_at_far_1e_3": report.val_at_far_1e_3, "loss": float(loss), "pairs": int(len(d))}


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


def _fingerprint(*parts: Any) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


class TrainingRun:
    """The C++ trainer with what a run keeps around it: history, the best model so far (by
    validation accuracy, then loss), the plateau schedule and checkpoints in `out`."""

    def __init__(self, base: str, start_model: str, data: RunData, config: FinetuneConfig, out: Path) -> None:
        self.config, self.out, self.data = config, out, data
        names = {name: i for i, name in enumerate(data.train.identities)}
        labels = [names[name] for name in data.train.labels.tolist()]
        self.settings = {**config.run_settings(), "base": _fingerprint(Path(base).read_bytes()),
                         "data": _fingerprint(data.train.chips.tobytes(), labels)}
        self.device, module = resolve_device(config.device)
        self.trainer = module.FaceTrainer(start_model, config.trains_bn_net, data.train.chips, labels, config.first_level,
                                        config.learning_rate, config.identities_per_batch, config.images_per_identity,
                                        config.augment, config.head_feature_copies, config.seed, config.worker_threads)
        self.validation = (ValidationSet.build(data.validation, config.identities_per_batch, config.images_per_identity,
                                               config.seed) if data.validation is not None else None)
        self.history: list[dict] = []
        self.best: dict | None = None
        self.resumed_from = 0
        self.checkpoint_bin, self.checkpoint_json = out / "checkpoint.bin", out / "checkpoint.json"
        self.best_affine, self.best_bn = out / "best_affine.dat", out / "best_bn.dat"
        if config.resume and self.checkpoint_bin.exists() and self.checkpoint_json.exists():
            self._restore()

    def _restore(self) -> None:
        state = json.loads(self.checkpoint_json.read_text())
        if state.get("config") != self.settings:
            raise ValueError(f"{self.checkpoint_json} belongs to a different run (other settings or data); "
                             "use another output_dir or resume=False")
        self.trainer.restore(self.checkpoint_bin.read_bytes())
        self.history, self.best, self.resumed_from = state["history"], state["best"], self.trainer.step

    def save_checkpoint(self) -> None:
        """Trainer and sampler state, history and best, written atomically."""
        _atomic.write_bytes(self.checkpoint_bin, self.trainer.checkpoint())
        _atomic.write_text(self.checkpoint_json, json.dumps(
            {"config": self.settings, "history": self.history, "best": self.best}, indent=1))

    def run_validation(self) -> None:
        """Validates the current model; keeps it (atomically) when it is the best so far."""
        if self.validation is None:
            return
        metrics = validate(self.trainer, self.validation, self.config.worker_threads)
        self.history.append({"kind": "validation", "step": self.trainer.step, "lr": self.trainer.learning_rate, **metrics})
        if self.best is None or (metrics["accuracy"], -metrics["loss"]) > (self.best["accuracy"], -self.best["loss"]):
            self.best = {"step": self.trainer.step, **metrics}
            _atomic.write_bytes(self.best_affine, self.trainer.affine_bytes())
            if self.config.trains_bn_net:
                _atomic.write_bytes(self.best_bn, self.trainer.bn_bytes())

    def train(self) -> None:
        """Steps until `steps`, `max_minutes` or the lr floor; validation, schedule and checkpoints
        as configured."""
        from tqdm import tqdm

        config, trainer = self.config, self.trainer
        started = time.perf_counter()
        if self.validation is not None and not any(h["kind"] == "validation" for h in self.history):
            self.run_validation()  # the starting point, step 0
        total, every_val, every_ckpt = config.total_steps, config.validation_interval, config.checkpoint_interval
        bar = tqdm(total=total, initial=trainer.step, desc=f"finetune {config.strategy}/{config.bn}", unit="step",
                   disable=not config.progress)
        chunk = 50 if config.kind == "head" else 1
        stale = 0
        while trainer.step < total:
            if config.max_minutes is not None and (time.perf_counter() - started) / 60 >= config.max_minutes:
                break
            if trainer.learning_rate < config.learning_rate_floor:
                break
            n = min(chunk, total - trainer.step, every_val - trainer.step % every_val,
                    every_ckpt - trainer.step % every_ckpt)
            loss = trainer.train(n)
            if not np.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss} at step {trainer.step}; lower the learning rate")
            self.history.append({"kind": "train", "step": trainer.step, "loss": float(loss), "lr": trainer.learning_rate})
            bar.update(n)
            if trainer.step % every_val == 0:
                previous = self.best["step"] if self.best else None
                self.run_validation()
                stale = 0 if self.best is None or self.best["step"] != previous else stale + 1
                if stale >= config.patience:
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


def export(run: TrainingRun, started: float) -> FinetuneResult:
    """finetuned_affine.dat (the best model, else the last), finetuned_bn.dat, history.json, training_curve.png.
    `started`: time.perf_counter() when training began (the minutes reported include the export)."""
    out, config, data, trainer = run.out, run.config, run.data, run.trainer
    affine_out, bn_out = out / "finetuned_affine.dat", out / "finetuned_bn.dat"
    if run.best is not None and run.best_affine.exists():
        os.replace(run.best_affine, affine_out)
        if config.trains_bn_net and run.best_bn.exists():
            os.replace(run.best_bn, bn_out)
    else:
        _atomic.write_bytes(affine_out, trainer.affine_bytes())
        if config.trains_bn_net:
            _atomic.write_bytes(bn_out, trainer.bn_bytes())
    if not config.trains_bn_net:  # the bn net to continue from: calibrated on (up to 1000 of) the training faces
        from .convert import convert_affine_to_bn

        convert_affine_to_bn(affine_out, bn_out, calibration=data.train.chips[:1000], threads=config.worker_threads)
    minutes = (time.perf_counter() - started) / 60
    history_path, curve_path = out / "history.json", out / "training_curve.png"
    validation_identities = len(data.validation.identities) if data.validation is not None else 0
    summary = {"config": run.settings, "device": run.device, "best": run.best, "history": run.history, "minutes": minutes,
               "train_faces": len(data.train), "train_identities": len(data.train.identities),
               "validation_identities": validation_identities,
               "skipped_images": data.skipped_images, "skipped_identities": data.skipped_identities}
    _atomic.write_text(history_path, json.dumps(summary, indent=1))
    _plot(run.history, curve_path)
    return FinetuneResult(
        affine_model=str(affine_out), bn_model=str(bn_out), history_path=str(history_path), curve_path=str(curve_path),
        best_step=run.best["step"] if run.best else trainer.step, best_validation=run.best, steps=trainer.step,
        minutes=minutes, resumed_from_step=run.resumed_from, train_faces=len(data.train),
        train_identities=len(data.train.identities), validation_identities=validation_identities,
        skipped_images=data.skipped_images, skipped_identities=data.skipped_identities, device=run.device)


def finetune(train: FaceInput, output_dir: str | os.PathLike, base_model: str | os.PathLike | None = None,
             val: FaceInput | None = None, config: FinetuneConfig | None = None, **options: Any) -> FinetuneResult:
    """Fine-tunes the face model on `train` and writes to `output_dir`:
    finetuned_affine.dat (the best model by validation; dlib.face_recognition_model_v1 loads it),
    finetuned_bn.dat (bn_con training net to continue from), history.json, training_curve.png and
    checkpoint files (a rerun with resume=True continues from the last one).

    train / val: identity folders (root/Name/*.jpg; photos are aligned through the chip cache, ready
    150x150 chips are used as they are), an IdentityDataset, a FaceSet, or (chips, labels). When val
    is None, a fifth of the identities (at least 2) is held out. Settings: a FinetuneConfig, or its
    fields as keywords (`finetune(train, out, strategy="all", steps=500)`); see FinetuneConfig for
    each and its default. The learning rate shrinks 10x after `patience` validations without
    improvement; the run stops at `steps`, `max_minutes`, or when the rate falls below `lr_floor`.
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
        raise ValueError(f"{base}: base_model must be an affine testing net (export a bn net with convert_bn_to_affine)")
    data = prepare_data(train, val, config)
    run = TrainingRun(base, starting_model(base, data, config, out), data, config, out)
    started = time.perf_counter()
    run.train()
    return export(run, started)
