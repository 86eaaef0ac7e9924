"""Large photos: detection on a resized copy (pyfacedlib.align.detection_scale) against dlib's own
full-resolution scan, side by side in one run — seconds per photo and which faces each finds.

The photos: 12-MP (4000x3000) "group photos" composed from real LFW photos (a real 12-MP photo
set is not available on these machines), each LFW photo scaled so its face is a given size and
placed at a random spot on a grey canvas. Two sets:
  - "large faces": faces 150-450 px (a 12-MP group or portrait photo taken from a few metres),
  - "small faces": faces 60-140 px (a crowd), below the default smallest face of 150 px.
For each photo: FaceEmbedder.embed_image (detect -> landmarks -> chips -> descriptors) with
  - full: min_face_size=0 — dlib's own scan, upsample 1 (the image doubled to 8000x6000),
  - default: min_face_size=None — the scaled copy chosen by the default rule,
  - min60: min_face_size=60 — the scaled copy for faces down to 60 px,
and the faces each finds, matched to the full scan's by box overlap (IoU >= 0.5).

    python benchmarks/large_photos.py [--photos 4] [--faces 8]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model  # noqa: E402


def lfw_photos(count: int, seed: int) -> list[Path]:
    root = Path(os.environ.get("PYFACEDLIB_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets"))
    people = sorted((root / "lfw" / "lfw-deepfunneled").iterdir())
    rng = np.random.default_rng(seed)
    return [sorted(people[i].glob("*.jpg"))[0] for i in rng.choice(len(people), count, replace=False)]


def compose(paths: list[Path], face_range: tuple[int, int], seed: int) -> np.ndarray:
    """A 4000x3000 canvas with the LFW photos placed without overlap; LFW faces are ~0.43 of the photo."""
    from PIL import Image

    import pyfacedlib as pfd

    rng = np.random.default_rng(seed)
    canvas = np.full((3000, 4000, 3), 110, np.uint8)
    taken = np.zeros((3000, 4000), bool)
    for path in paths:
        face = rng.uniform(*face_range)
        side = int(round(face / 0.43))
        tile = np.asarray(Image.fromarray(pfd.load_image(path)).resize((side, side), Image.Resampling.BILINEAR))
        for _ in range(200):
            y, x = rng.integers(0, 3000 - side), rng.integers(0, 4000 - side)
            if not taken[y:y + side, x:x + side].any():
                canvas[y:y + side, x:x + side] = tile
                taken[y:y + side, x:x + side] = True
                break
    return canvas


def iou(a, b) -> float:
    left, top, right, bottom = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, right - left) * max(0, bottom - top)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=4, help="photos per set")
    parser.add_argument("--faces", type=int, default=8, help="faces per photo")
    args = parser.parse_args()
    import pyfacedlib as pfd

    embedder = pfd.FaceEmbedder()
    info = pfd.build_info()
    cpu = cpu_model()
    print(f"CPU: {cpu}, {os.cpu_count()} cores; {info['simd']}; "
          f"embedding threads {embedder.threads}")
    modes = {"full": 0, "default": None, "min60": 60}
    for set_name, face_range in (("large faces 150-450 px", (150, 450)), ("small faces 60-140 px", (60, 140))):
        seconds = {m: [] for m in modes}
        found = {m: 0 for m in modes}
        matched = {m: 0 for m in modes}
        for p in range(args.photos):
            photo = compose(lfw_photos(args.faces, seed=100 * p + len(set_name)), face_range, seed=p)
            faces = {}
            for mode, min_face in modes.items():
                start = time.perf_counter()
                faces[mode] = embedder.embed_image(photo, min_face_size=min_face)
                seconds[mode].append(time.perf_counter() - start)
                found[mode] += len(faces[mode])
            for mode in modes:
                matched[mode] += sum(any(iou(f.box, g.box) >= 0.5 for g in faces[mode]) for f in faces["full"])
        print(f"\n{set_name}: {args.photos} photos 4000x3000, {args.faces} faces placed in each")
        print("| detection | min_face_size | s/photo (mean) | faces found | of the full scan's faces |")
        print("|---|---|---|---|---|")
        for mode, min_face in modes.items():
            scale = pfd.align.detection_scale((3000, 4000), 1, min_face)
            print(f"| {mode} (scan at {scale:.3g}x) | {min_face} | {np.mean(seconds[mode]):.2f} | {found[mode]} | "
                  f"{matched[mode]} of {found['full']} |")
        print(f"speed-up of default over full: {np.mean(seconds['full']) / np.mean(seconds['default']):.1f}x")


if __name__ == "__main__":
    main()
