"""Fine-tuning dlib's face model on your own identities.

Three starting states, as in Caffe's fine-tuning tutorial: predict only (FaceEmbedder, no
training), train the last layer (`strategy="head"`), train from level K up (`"from_level:K"`, lower
levels frozen by learning-rate multipliers of 0) or everything (`"all"`). Batch norm is either
frozen (`bn="frozen"`: the affine testing net is trained directly) or trainable
(`bn="calibrated"`: the run starts from convert_affine_to_bn(base, calibration=the training faces)).

Levels are counted from the input: 0 = stem (7x7 conv), 1..5 = dlib's level4..level0 (32, 64, 128,
256, 256 channels), 6 = the head (fc_no_bias<128>). The training itself (batches, augmentation,
dlib's loss_metric and sgd; frozen-BN nets data-parallel over threads, bn nets through dlib's
dnn_trainer) runs in C++ with the GIL released; this module handles data, validation, the
learning-rate schedule, checkpoints and outputs.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from . import _atomic, _plots, models
from ._native import core
from .datasets import ChipCache, IdentityDataset, identity_folders, identity_split
from .embedder import as_chips, default_threads
from .evaluate import verification

STRATEGY_DEFAULTS = {  # lr, steps, val_every, checkpoint_every
    "head": (0.01, 2000, 200, 500),
    "from_level": (0.0001, 300, 50, 25),
    "all": (0.00005, 300, 50, 25),
}

BN_MODES = ("frozen", "calibrated")

TrainInput = Union[str, os.PathLike, IdentityDataset, tuple]


@dataclass
class FaceSet:
    """Aligned chips with identity labels, and what was left out."""

    chips: np.ndarray
    labels: np.ndarray
    skipped_images: dict[str, str] = field(default_factory=dict)
    skipped_identities: dict[str, str] = field(default_factory=dict)

    @property
    def identities(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def subset(self, identities: Sequence[str]) -> "FaceSet":
        keep = np.isin(self.labels, list(identities))
        return FaceSet(self.chips[keep], self.labels[keep])


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


def parse_strategy(strategy: str) -> tuple[str, int]:
    """("head"|"all"|"from_level", first trained level 0..6)."""
    if strategy == "head":
        return "head", 6
    if strategy == "all":
        return "all", 0
    if strategy.startswith("from_level:"):
        try:
            level = int(strategy.split(":", 1)[1])
        except ValueError:
            level = -1
        if 0 <= level <= 6:
            return "from_level", level
    raise ValueError(f"strategy must be 'head', 'all' or 'from_level:K' with K in 0..6, got {strategy!r}")


def _all_chips(paths: list[str]) -> np.ndarray | None:
    """The images themselves when every one is already a 150x150 chip, else None."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as img:
                if img.size != (150, 150):
                    return None
        except OSError:
            return None
    from .images import load_image

    return np.stack([load_image(p) for p in paths])


def load_faces(data: TrainInput, cache_dir: str | os.PathLike | None = None, progress: bool = False) -> FaceSet:
    """Faces for training/validation from identity folders (photos aligned through the chip cache,
    or ready 150x150 chips used as they are), an IdentityDataset, or a (chips, labels) tuple.
    Unreadable images and images without a face are skipped and listed."""
    if isinstance(data, tuple):
        chips, labels = data
        chips = as_chips(chips)
        labels = np.asarray([str(v) for v in labels])
        if len(labels) != len(chips):
            raise ValueError(f"{len(chips)} chips but {len(labels)} labels")
        return FaceSet(chips, labels)
    dataset = data if isinstance(data, IdentityDataset) else identity_folders(data)
    ready = _all_chips(dataset.paths)
    if ready is not None:
        return FaceSet(ready, np.asarray(dataset.labels))
    from .bench import default_cache_dir

    chipset = ChipCache(cache_dir or default_cache_dir()).chips(dataset.paths, progress=progress)
    keep = chipset.ok
    return FaceSet(chipset.chips[keep], np.asarray(dataset.labels)[keep], skipped_images=chipset.skipped)


def trainable(faces: FaceSet) -> FaceSet:
    """Only identities with at least 2 images (metric learning needs positive pairs); the others are listed."""
    names, counts = np.unique(faces.labels, return_counts=True)
    too_few = {str(n): f"{c} image(s); at least 2 are needed" for n, c in zip(names, counts) if c < 2}
    keep = ~np.isin(faces.labels, list(too_few))
    return FaceSet(faces.chips[keep], faces.labels[keep], faces.skipped_images,
                   {**faces.skipped_identities, **too_few})


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
        from .convert import identity_batches

        first, second, same = validation_pairs(faces.labels, seed=seed)
        # loss_metric needs positives and negatives in every batch: distinct identities, >= 2 images each
        counts = np.unique(faces.labels, return_counts=True)[1]
        per_identity = int(max(2, min(images_per_identity, np.sort(counts)[-min(len(counts), identities_per_batch)])))
        identities = min(identities_per_batch, len(counts))
        batches = [b for b in identity_batches(faces.labels.tolist(), identities, per_identity, seed=seed)
                   if 2 <= len(set(faces.labels[b].tolist())) < len(b)]
        order = np.concatenate(batches) if batches else np.zeros(0, int)
        ids = {name: i for i, name in enumerate(faces.identities)}
        return cls(faces, first, second, same, np.ascontiguousarray(faces.chips[order]),
                   [ids[n] for n in faces.labels[order].tolist()], identities * per_identity)


def validate(trainer, validation: ValidationSet, threads: int) -> dict:
    """Verification accuracy (10 interleaved folds) and VAL@FAR=1e-3 on the validation pairs, and
    loss_metric's own loss (dlib's, hard negatives included) over fixed validation mini-batches."""
    descriptors = trainer.embedder(threads).embed_chips(validation.faces.chips, 0, 0).astype(np.float64)
    d = np.linalg.norm(descriptors[validation.first] - descriptors[validation.second], axis=1)
    report = verification(d, validation.same, fold_ids=np.arange(len(d)) % 10)
    loss = (trainer.validation_loss(validation.batch_chips, validation.batch_labels, validation.batch_size)
            if len(validation.batch_labels) else float("nan"))
    return {"accuracy": report.accuracy_mean, "accuracy_at_0_6": report.accuracy_at_0_6,
            "val_at_far_1e_3": report.val_at_far_1e_3, "loss": float(loss), "pairs": int(len(d))}


def _fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else json.dumps(part, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


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


def finetune(train: TrainInput, output_dir: str | os.PathLike, base_model: str | os.PathLike | None = None,
             strategy: str = "head", bn: str = "frozen", steps: int | None = None, max_minutes: float | None = None,
             lr: float | None = None, identities_per_batch: int = 5, images_per_identity: int = 5,
             augment: bool = True, val: TrainInput | None = None, val_every: int | None = None,
             checkpoint_every: int | None = None, resume: bool = True, seed: int = 0, threads: int | None = None,
             progress: bool = True, patience: int = 3, lr_floor: float | None = None,
             cache_dir: str | os.PathLike | None = None, head_feature_copies: int = 4) -> FinetuneResult:
    """Fine-tunes the face model on `train` and writes to `output_dir`:
    finetuned_affine.dat (the best model by validation; dlib.face_recognition_model_v1 loads it),
    finetuned_bn.dat (bn_con training net to continue from), history.json, training_curve.png and
    checkpoint files (a rerun with resume=True continues from the last one).

    train / val: identity folders (root/Name/*.jpg; photos are aligned through the chip cache, ready
    150x150 chips are used as they are), an IdentityDataset, or (chips, labels). When val is None,
    a fifth of the identities (at least 2) is held out. Identities with one image are skipped and
    listed; fewer than 2 usable identities is a ValueError. The learning rate shrinks 10x after
    `patience` validations without improvement; the run stops at `steps`, `max_minutes`, or when the
    rate falls below `lr_floor` (default lr/1000). With strategy="head" the trunk runs once per image
    and per augmented copy (`head_feature_copies`, when augment) and only the head trains, on cached
    256-D features; the batch-norm mode then only decides how the bn output file is made.
    """
    kind, level = parse_strategy(strategy)
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, got {bn!r}")
    default_lr, default_steps, default_val, default_ckpt = STRATEGY_DEFAULTS[kind]
    lr = float(lr or default_lr)
    steps = int(steps if steps is not None else default_steps)
    val_every = int(val_every or default_val)
    checkpoint_every = int(checkpoint_every or default_ckpt)
    lr_floor = lr_floor if lr_floor is not None else lr / 1000
    threads = threads or default_threads()
    if steps < 0 or val_every < 1 or checkpoint_every < 1:
        raise ValueError("steps must be >= 0, val_every and checkpoint_every >= 1")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    base = str(base_model) if base_model is not None else models.path(models.FACE_RECOGNITION)
    if core.net_kind(base) != "affine":
        raise ValueError(f"{base}: base_model must be an affine testing net (export a bn net with convert_bn_to_affine)")

    faces = trainable(load_faces(train, cache_dir, progress))
    if val is not None:
        train_faces, val_faces = faces, trainable(load_faces(val, cache_dir, progress))
    elif len(faces.identities) >= 4:
        train_ids, val_ids = identity_split(faces.identities, [0.8, 0.2], seed=seed)
        if len(val_ids) < 2:
            train_ids, val_ids = train_ids[:-2 + len(val_ids)], val_ids + train_ids[-2 + len(val_ids):]
        train_faces, val_faces = faces.subset(train_ids), faces.subset(val_ids)
    else:
        train_faces, val_faces = faces, None
    if len(train_faces.identities) < 2:
        raise ValueError(
            f"training needs at least 2 identities with at least 2 images each; found {len(train_faces.identities)} "
            f"(skipped identities: {faces.skipped_identities or 'none'})")
    if val_faces is not None and set(val_faces.identities) & set(train_faces.identities):
        raise ValueError("validation identities must not appear in the training set")
    if val_faces is not None and len(val_faces.identities) < 2:
        val_faces = None
    validation = (ValidationSet.build(val_faces, identities_per_batch, images_per_identity, seed)
                  if val_faces is not None else None)

    names = {name: i for i, name in enumerate(train_faces.identities)}
    labels = [names[name] for name in train_faces.labels.tolist()]
    train_bn = bn == "calibrated" and kind != "head"
    start_model = base
    if train_bn:
        from .convert import convert_affine_to_bn

        start_model = str(out / "base_calibrated_bn.dat")
        if not (resume and Path(start_model).exists()):
            convert_affine_to_bn(base, start_model, calibration=train_faces.chips, threads=threads)
    config = {"strategy": strategy, "bn": bn, "lr": lr, "head_feature_copies": head_feature_copies, "identities_per_batch": identities_per_batch,
              "images_per_identity": images_per_identity, "augment": augment, "seed": seed,
              "base": _fingerprint(Path(base).read_bytes()),
              "data": _fingerprint(train_faces.chips.tobytes(), labels)}
    trainer = core.FaceTrainer(start_model, train_bn, train_faces.chips, labels, level, lr,
                               identities_per_batch, images_per_identity, augment, head_feature_copies, seed, threads)

    history: list[dict] = []
    best: dict | None = None
    resumed_from = 0
    ckpt_bin, ckpt_json = out / "checkpoint.bin", out / "checkpoint.json"
    if resume and ckpt_bin.exists() and ckpt_json.exists():
        state = json.loads(ckpt_json.read_text())
        if state.get("config") != config:
            raise ValueError(f"{ckpt_json} belongs to a different run (other settings or data); "
                             "use another output_dir or resume=False")
        trainer.restore(ckpt_bin.read_bytes())
        history, best, resumed_from = state["history"], state["best"], trainer.step
    best_affine, best_bn = out / "best_affine.dat", out / "best_bn.dat"

    def save_checkpoint() -> None:
        _atomic.write_bytes(ckpt_bin, trainer.checkpoint())
        _atomic.write_text(ckpt_json, json.dumps({"config": config, "history": history, "best": best}, indent=1))

    def run_validation() -> None:
        nonlocal best
        if val_faces is None:
            return
        assert validation is not None
        metrics = validate(trainer, validation, threads)
        history.append({"kind": "validation", "step": trainer.step, "lr": trainer.learning_rate, **metrics})
        if best is None or (metrics["accuracy"], -metrics["loss"]) > (best["accuracy"], -best["loss"]):
            best = {"step": trainer.step, **metrics}
            _atomic.write_bytes(best_affine, trainer.affine_bytes())
            if train_bn:
                _atomic.write_bytes(best_bn, trainer.bn_bytes())

    started = time.perf_counter()
    if val_faces is not None and not any(h["kind"] == "validation" for h in history):
        run_validation()  # the starting point, step 0
    from tqdm import tqdm

    bar = tqdm(total=steps, initial=trainer.step, desc=f"finetune {strategy}/{bn}", unit="step", disable=not progress)
    chunk = 50 if kind == "head" else 1
    stale = 0
    while trainer.step < steps:
        if max_minutes is not None and (time.perf_counter() - started) / 60 >= max_minutes:
            break
        if trainer.learning_rate < lr_floor:
            break
        n = min(chunk, steps - trainer.step, val_every - trainer.step % val_every,
                checkpoint_every - trainer.step % checkpoint_every)
        loss = trainer.train(n)
        if not np.isfinite(loss):
            raise FloatingPointError(f"training loss became {loss} at step {trainer.step}; lower the learning rate")
        history.append({"kind": "train", "step": trainer.step, "loss": float(loss), "lr": trainer.learning_rate})
        bar.update(n)
        if trainer.step % val_every == 0:
            previous = best["step"] if best else None
            run_validation()
            stale = 0 if best is None or best["step"] != previous else stale + 1
            if stale >= patience:
                trainer.learning_rate = trainer.learning_rate / 10
                stale = 0
        last_val = next((h for h in reversed(history) if h["kind"] == "validation"), None)
        bar.set_postfix(loss=f"{loss:.4f}", lr=f"{trainer.learning_rate:.2g}",
                        val=f"{100 * last_val['accuracy']:.2f}%" if last_val else "-")
        if trainer.step % checkpoint_every == 0:
            save_checkpoint()
    bar.close()
    if val_faces is not None and (not history or history[-1].get("kind") != "validation"):
        run_validation()
    save_checkpoint()

    affine_out, bn_out = out / "finetuned_affine.dat", out / "finetuned_bn.dat"
    if best is not None and best_affine.exists():
        os.replace(best_affine, affine_out)
        if train_bn and best_bn.exists():
            os.replace(best_bn, bn_out)
    else:
        _atomic.write_bytes(affine_out, trainer.affine_bytes())
        if train_bn:
            _atomic.write_bytes(bn_out, trainer.bn_bytes())
    if not train_bn:  # the bn net to continue from: calibrated on (up to 1000 of) the training faces
        from .convert import convert_affine_to_bn

        convert_affine_to_bn(affine_out, bn_out, calibration=train_faces.chips[:1000], threads=threads)
    minutes = (time.perf_counter() - started) / 60
    history_path, curve_path = out / "history.json", out / "training_curve.png"
    summary = {"config": config, "best": best, "history": history, "minutes": minutes,
               "train_faces": int(len(train_faces.labels)), "train_identities": len(train_faces.identities),
               "validation_identities": len(val_faces.identities) if val_faces is not None else 0,
               "skipped_images": faces.skipped_images, "skipped_identities": faces.skipped_identities}
    _atomic.write_text(history_path, json.dumps(summary, indent=1))
    _plot(history, curve_path)
    return FinetuneResult(
        affine_model=str(affine_out), bn_model=str(bn_out), history_path=str(history_path), curve_path=str(curve_path),
        best_step=best["step"] if best else trainer.step, best_validation=best, steps=trainer.step, minutes=minutes,
        resumed_from_step=resumed_from, train_faces=int(len(train_faces.labels)),
        train_identities=len(train_faces.identities),
        validation_identities=len(val_faces.identities) if val_faces is not None else 0,
        skipped_images=faces.skipped_images, skipped_identities=faces.skipped_identities)
