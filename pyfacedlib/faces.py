"""Aligned face chips from image files (one face per image: the one nearest the centre)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from . import align
from .errors import ImageError
from .images import load_image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".pgm", ".ppm")


@dataclass
class AlignedFaces:
    """Chips (N,150,150,3) uint8, the file and identity of each, and what was skipped and why."""

    chips: np.ndarray
    paths: list[str]
    labels: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # path -> reason


def image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under `folder` (recursively), sorted."""
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"not a folder: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def align_images(paths: Iterable[str | os.PathLike], labels: Iterable[str] | None = None, detector: str = "hog",
                 upsample: int = 1, progress: bool = False) -> AlignedFaces:
    """Detects the face nearest each image's centre, aligns it (5 points, padding 0.25) to a 150x150 chip.

    Images without a detected face, or that cannot be read, are skipped and listed in `.skipped`.
    """
    files = [str(p) for p in paths]
    names = list(labels) if labels is not None else [Path(p).parent.name for p in files]
    iterator = files
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="aligning", unit="img")
    chips: list[np.ndarray] = []
    kept: list[str] = []
    kept_labels: list[str] = []
    skipped: dict[str, str] = {}
    for path, label in zip(iterator, names):
        try:
            image = load_image(path)
        except ImageError as exc:
            skipped[path] = str(exc)
            continue
        boxes = align.detect(image, detector=detector, upsample=upsample)
        if len(boxes) == 0:
            skipped[path] = "no face detected"
            continue
        box = boxes[align.nearest_to_center(boxes, image.shape)]
        chips.append(align.extract_chip(image, align.landmarks(image, box)))
        kept.append(path)
        kept_labels.append(label)
    array = np.stack(chips) if chips else np.zeros((0, 150, 150, 3), np.uint8)
    return AlignedFaces(array, kept, kept_labels, skipped)
