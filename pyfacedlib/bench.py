"""The LFW verification benchmark: several models side by side, one alignment, honest reporting."""
from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _atomic, _plots
from .align import AlignmentSettings
from .chipcache import ChipCache, default_cache_dir
from .datasets import pair_images, read_lfw_pairs
from .embedder import EmbedderSettings, FaceEmbedder
from .evaluate import sample_pairs, verification

LFW_HELP = ("LFW not found at {where}. Get the deep-funneled images and the protocol files from the "
            "official LFW site (lfw-deepfunneled.tgz, pairs.txt), unpack them into one folder "
            "(DIR/lfw-deepfunneled/Name/Name_0001.jpg, DIR/pairs.txt), and pass --lfw-dir DIR "
            "(or set PYFACEDLIB_DATA to a folder holding lfw/).")


def default_lfw_dir() -> Path:
    """datasets.data_root()/lfw: $PYFACEDLIB_DATA/lfw, else ../shared/datasets/lfw (relative to the working
    directory)."""
    from .datasets import data_root

    return data_root() / "lfw"


def resolve_lfw(lfw_dir: str | os.PathLike | None, pairs: str | os.PathLike | None) -> tuple[Path, Path, str]:
    """(images folder, pairs file, variant name); FileNotFoundError with instructions when absent."""
    root = Path(lfw_dir) if lfw_dir else default_lfw_dir()
    images = next((root / name for name in ("lfw-deepfunneled", "lfw_funneled", "lfw") if (root / name).is_dir()),
                  root)
    pairs_file = Path(pairs) if pairs else root / "pairs.txt"
    if not pairs_file.exists() or not images.is_dir() or not any(p.is_dir() for p in images.iterdir()):
        raise FileNotFoundError(LFW_HELP.format(where=root.resolve()))
    name = images.name.lower()
    variant = ("LFW deep-funneled" if "deepfunnel" in name else "LFW funneled" if "funnel" in name
               else "LFW (raw or unknown variant)")
    return images, pairs_file, variant


def _embed(embedder: FaceEmbedder, chips: np.ndarray, num_jitters: int, flip: bool, progress: bool) -> np.ndarray:
    from tqdm import tqdm

    out = np.zeros((len(chips), 128), np.float32)
    step = 256
    for start in tqdm(range(0, len(chips), step), desc="embedding", unit="batch", disable=not progress):
        batch = chips[start:start + step]
        d = embedder.embed_chips(batch, num_jitters=num_jitters, seed=0)
        if flip:
            d = (d + embedder.embed_chips(np.ascontiguousarray(batch[:, :, ::-1]), num_jitters=num_jitters, seed=0)) / 2
        out[start:start + len(batch)] = d
    return out


def _model_names(models: Sequence[str | None]) -> list[str]:
    names = []
    for model in models:
        base = "shipped" if model is None else Path(model).stem
        name, n = base, 2
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def bench_lfw(lfw_dir: str | os.PathLike | None = None, pairs: str | os.PathLike | None = None,
              models: Sequence[str | None] = (None,), num_jitters: int = 0, flip: bool = False,
              out: str | os.PathLike = "lfw-bench", strict: bool = False, cache_dir: str | os.PathLike | None = None,
              settings: AlignmentSettings | None = None, workers: int | None = None, threads: int | None = None,
              progress: bool = True, embedder: EmbedderSettings | None = None) -> dict:
    """Runs the LFW verification protocol for each model and writes report.json, report.md, roc.png to `out`.
    embedder: the forward pass (EmbedderSettings; default: the folded CPU pass).

    models: affine .dat paths (None = the shipped model). Detection failures: by default the face is
    aligned in a centred box and the image counted; strict=True drops every pair with such an image.
    Unreadable images always drop their pairs. Returns the report dict.
    """
    started = time.perf_counter()
    images_dir, pairs_file, variant = resolve_lfw(lfw_dir, pairs)
    pair_list = read_lfw_pairs(pairs_file)
    settings = settings or AlignmentSettings()
    unique, first, second = pair_images(pair_list, images_dir)

    t = time.perf_counter()
    faces = ChipCache(cache_dir or default_cache_dir(), settings).faces(unique, workers=workers, progress=progress)
    align_seconds = time.perf_counter() - t
    # row[j]: the face of unique image j in `faces`, -1 where it has none
    position = {source: j for j, source in enumerate(unique)}
    row = np.full(len(unique), -1, np.int64)
    row[[position[s] for s in faces.sources]] = np.arange(len(faces))
    dropped = {"fallback", "detected_cnn"} if strict else set()
    usable = row >= 0
    usable[row >= 0] = [faces.records[r].status not in dropped for r in row[row >= 0]]
    n = len(pair_list)
    keep = usable[first] & usable[second]
    same = np.array([p.same for p in pair_list])[keep]
    folds = np.array([p.fold for p in pair_list])
    if len(np.unique(folds)) == 1:  # a dev file: one fold; use 10 interleaved folds
        folds = np.arange(n) % 10
    folds = folds[keep]
    first, second = row[first[keep]], row[second[keep]]

    detection = {
        "images": len(unique),
        "detected": sum(r.status == "detected" for r in faces.records),
        "missed_by_detector": sum(r.status in ("detected_cnn", "fallback") for r in faces.records) + len(faces.skipped),
        "found_by_cnn_fallback": len(faces.cnn_rescued),
        "fallback_center_box": len(faces.fallbacks),
        "unreadable_skipped": len(faces.skipped),
        "cnn_fallback_images": faces.cnn_rescued,
        "center_box_images": faces.fallbacks,
        "skipped_images": faces.skipped,
        "policy": ("strict: pairs with an image the primary detector missed are dropped" if strict else
                   f"primary detector misses -> fallback '{settings.fallback}' (each counted); "
                   "unreadable -> pair dropped"),
    }
    report: dict[str, Any] = {
        "lfw_variant": variant,
        "images_dir": str(images_dir),
        "pairs_file": str(pairs_file),
        "pairs_total": n,
        "pairs_used": int(keep.sum()),
        "pairs_dropped": int(n - keep.sum()),
        "alignment": {**settings.__dict__, "landmarks": "shape_predictor_5_face_landmarks",
                      "chip": "dlib get_face_chip_details + extract_image_chip"},
        "detection": detection,
        "num_jitters": num_jitters,
        "flip": flip,
        "alignment_seconds": round(align_seconds, 1),
        "models": {},
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    report["models"], curves = _evaluate_models(models, faces.chips, first, second, same, folds, num_jitters, flip,
                                                embedder, threads, progress)
    for entry in report["models"].values():
        entry["detection_failures"] = detection["missed_by_detector"]
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    _atomic.write_text(out / "report.json", json.dumps(report, indent=1))
    _atomic.write_text(out / "report.md", render_markdown(report))
    plot_roc(curves, out / "roc.png", title=f"{variant}: {report['pairs_used']} pairs")
    return report


def _evaluate_models(models: Sequence[str | None], chips: np.ndarray, first: np.ndarray, second: np.ndarray,
                     same: np.ndarray, folds: np.ndarray, num_jitters: int, flip: bool,
                     embedder_settings: EmbedderSettings | None, threads: int | None, progress: bool
                     ) -> tuple[dict, dict]:
    """Per model: embed the chips the pairs use, run the verification protocol. Returns the report
    entries by model name and the ROC curves (bench-lfw and evaluate_folders share this)."""
    used = np.unique(np.concatenate([first, second]))
    entries, curves = {}, {}
    for name, model in zip(_model_names(list(models)), models):
        t = time.perf_counter()
        embedder = FaceEmbedder(model, threads=threads, **(embedder_settings or EmbedderSettings()).kwargs())
        descriptors = np.zeros((len(chips), 128), np.float32)
        descriptors[used] = _embed(embedder, chips[used], num_jitters, flip, progress)
        distances = np.linalg.norm(descriptors[first].astype(np.float64) - descriptors[second], axis=1)
        result = verification(distances, same, fold_ids=folds)
        curves[name] = (result.roc_far, result.roc_tar)
        entries[name] = {"model": embedder.model_path, "backend": embedder.backend, "threads": embedder.threads,
                         **result.to_dict(), "seconds": round(time.perf_counter() - t, 1)}
    return entries, curves


# the old name of pyfacedlib.evaluate.sample_pairs (same signature)
folder_pairs = sample_pairs


def evaluate_folders(root: str | os.PathLike,
                     model: str | os.PathLike | None | Sequence[str | os.PathLike | None] = None,
                     out: str | os.PathLike | None = None, max_same_pairs: int = 50_000, seed: int = 0,
                     settings: AlignmentSettings | None = None, cache_dir: str | os.PathLike | None = None,
                     threads: int | None = None, progress: bool = True, embedder: EmbedderSettings | None = None
                     ) -> dict:
    """Verification on your own identity folders (root/Name/*.jpg), several models side by side
    (embedder: the forward pass, EmbedderSettings; default: the folded CPU pass).

    Pairs (pyfacedlib.evaluate.sample_pairs): every same-identity pair (up to max_same_pairs), as
    many different-identity pairs at random, 10 random folds stratified by kind; the metrics of
    bench-lfw (pyfacedlib.evaluate.verification): accuracy, best threshold, thresholds at FAR
    1e-2 / 1e-3, AUC, EER, ROC. Faces are aligned through the chip cache (one face per image, the
    one nearest the centre). model: one model or a list (None = the shipped model). out: also write
    report.json, report.md and roc.png there. Returns the report:
    `report["models"][name]["best_threshold"]` can be handed to a gallery (`gallery.threshold = t`).
    """
    from .chipcache import load_faces
    from .datasets.identities import identity_folders

    started = time.perf_counter()
    given = list(model) if isinstance(model, (list, tuple)) else [model]
    models: list[str | None] = [None if m is None else str(m) for m in given]
    dataset = identity_folders(root)
    faces = load_faces(dataset, settings=settings, cache_dir=cache_dir, progress=progress)
    first, second, same, folds = sample_pairs(faces.labels, max_same_pairs, seed, folds=10)
    report: dict[str, Any] = {
        "root": str(root), "identities": len(set(faces.labels.tolist())), "images": len(dataset),
        "faces": len(faces), "skipped_images": faces.skipped,
        "same_pairs": int(same.sum()), "different_pairs": int((~same).sum()),
        "alignment": {**(settings or AlignmentSettings()).__dict__},
    }
    report["models"], curves = _evaluate_models(models, faces.chips, first, second, same, folds, 0, False, embedder,
                                                threads,
                                                progress)
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    if out is not None:
        target = Path(out)
        target.mkdir(parents=True, exist_ok=True)
        _atomic.write_text(target / "report.json", json.dumps(report, indent=1))
        _atomic.write_text(target / "report.md", render_folder_markdown(report))
        plot_roc(curves, target / "roc.png", title=f"{Path(root).name}: {len(same)} pairs")
    return report


def render_folder_markdown(report: dict) -> str:
    """evaluate_folders' report as a Markdown page."""
    lines = [
        f"# Verification on {report['root']}",
        "",
        f"{report['identities']} identities, {report['faces']} faces from {report['images']} images "
        f"({len(report['skipped_images'])} skipped); {report['same_pairs']} same-person pairs, "
        f"{report['different_pairs']} different-person pairs, 10 random folds.",
        "",
        "| model | accuracy (10-fold) | best threshold | threshold @ FAR 1e-2 | threshold @ FAR 1e-3 | "
        "VAL@FAR=1e-3 | acc @ 0.6 | AUC | EER |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        lines.append(
            f"| {name} | {100 * m['accuracy_mean']:.2f}% ± {100 * m['accuracy_std']:.2f} | "
            f"{m['best_threshold']:.3f} | {m['threshold_at_far_1e_2']:.3f} | {m['threshold_at_far_1e_3']:.3f} | "
            f"{100 * m['val_at_far_1e_3']:.2f}% | {100 * m['accuracy_at_0_6']:.2f}% | {m['auc']:.4f} | "
            f"{100 * m['eer']:.2f}% |")
    lines += ["", "Same person when the distance is below the threshold. A threshold can be handed to a "
              "gallery: `gallery.threshold = t`.", ""]
    if report["skipped_images"]:
        lines += ["Skipped images:", ""] + [f"- {p}: {why}" for p, why in report["skipped_images"].items()] + [""]
    return "\n".join(lines)


def render_markdown(report: dict) -> str:
    """The report as a Markdown page a person reads."""
    det = report["detection"]
    lines = [
        f"# {report['lfw_variant']} verification",
        "",
        f"Pairs: {report['pairs_file']} — {report['pairs_used']} of {report['pairs_total']} used "
        f"({report['pairs_dropped']} dropped). Jitters: {report['num_jitters']}, flip: {report['flip']}.",
        f"Alignment: {report['alignment']['detector']} detector, upsample {report['alignment']['upsample']}, "
        f"5-point landmarks, {report['alignment']['size']} px chips, padding {report['alignment']['padding']}.",
        f"Detection: {det['images']} images, {det['detected']} found by the {report['alignment']['detector']} "
        f"detector, {det['missed_by_detector']} missed: {det['found_by_cnn_fallback']} found by the CNN detector, "
        f"{det['fallback_center_box']} aligned in a centred box, {det['unreadable_skipped']} unreadable "
        f"({det['policy']}).",
        f"Time: alignment {report['alignment_seconds']} s (cached chips are reused), "
        f"total {report['total_seconds']} s.",
        "",
        "| model | accuracy (10-fold) | acc @ 0.6 | VAL@FAR=1e-3 | VAL@FAR=1e-2 | AUC | EER | seconds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in report["models"].items():
        lines.append(
            f"| {name} | {100 * m['accuracy_mean']:.2f}% ± {100 * m['accuracy_std']:.2f} | "
            f"{100 * m['accuracy_at_0_6']:.2f}% | {100 * m['val_at_far_1e_3']:.2f}% | "
            f"{100 * m['val_at_far_1e_2']:.2f}% | {m['auc']:.4f} | {100 * m['eer']:.2f}% | {m['seconds']} |")
    lines += ["", "Thresholds are chosen on the other nine folds for each held-out fold.", ""]
    return "\n".join(lines)


def plot_roc(curves: dict[str, tuple[list[float], list[float]]], path: Path, title: str) -> None:
    """All models' ROC curves on one plot, log false-accept-rate axis (written atomically)."""
    fig, ax = _plots.pyplot().subplots(figsize=(6, 4.5))
    for name, (far_list, tar_list) in curves.items():
        far = np.asarray(far_list)
        mask = far > 0
        ax.plot(far[mask], np.asarray(tar_list)[mask], label=name)
    ax.set_xscale("log")
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    _plots.save_figure(fig, path, dpi=120)
