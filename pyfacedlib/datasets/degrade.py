"""Domain shifts applied to face chips (low resolution, grayscale), for benchmarks and training."""
from __future__ import annotations

import numpy as np


def degrade(chips: np.ndarray, kind: str) -> np.ndarray:
    """A domain shift applied to chips (N,150,150,3) uint8: 'lowres:N' (down to N px and back up,
    bilinear), 'gray' (luminance replicated to RGB), 'none'."""
    from PIL import Image

    chips = np.asarray(chips)
    if kind == "none":
        return chips.copy()
    if kind == "gray":
        gray = np.round(chips.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))
        return np.repeat(gray.clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    if kind.startswith("lowres:"):
        size = int(kind.split(":", 1)[1])
        if not 2 <= size <= 150:
            raise ValueError(f"lowres size must be in 2..150, got {size}")
        out = np.empty_like(chips)
        for i, chip in enumerate(chips):
            small = Image.fromarray(chip).resize((size, size), Image.Resampling.BILINEAR)
            out[i] = np.asarray(small.resize(chip.shape[1::-1], Image.Resampling.BILINEAR))
        return out
    raise ValueError(f"unknown degradation {kind!r}; use 'lowres:N', 'gray' or 'none'")


