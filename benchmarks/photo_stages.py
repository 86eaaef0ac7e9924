"""Where the time of one photo goes, stage by stage, on one thread: decoding (EXIF applied),
detection (dlib's HOG, upsample 1; large photos on the scaled copy, which is included), landmarks,
chips, descriptors (the folded forward pass, one thread). Two sets: LFW photos as they are
(250x250) and 4000x3000 photos composed from LFW photos (7 faces of 150-450 px, as in
large_photos.py). Then detection alone on the small photos, side by side: each HOG kernel
(portable, AVX2 where the CPU has it) and dlib's own detector (dlib-bin, when installed); the CNN
detector, ours and dlib-bin's; and the chip cache's alignment in 1 and 2 worker processes.

    PYTHONPATH=. PYFACEDLIB_DATA=../shared/datasets python benchmarks/photo_stages.py [--small 100] [--large 4]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, lfw_people  # noqa: E402


def stages(paths: list[str]) -> dict[str, float]:
    """Mean milliseconds per photo of each stage, on this thread."""
    import pyfacedlib as pfd
    from pyfacedlib import align

    embedder = pfd.FaceEmbedder(threads=1)
    align.detect(pfd.load_image(paths[0]))  # detector and landmark model loaded before the clock
    totals = dict.fromkeys(("decode", "detect", "landmarks + chips", "descriptors"), 0.0)
    faces = 0
    for path in paths:
        t0 = time.perf_counter()
        image = pfd.load_image(path)
        t1 = time.perf_counter()
        boxes = align.detect(image)
        t2 = time.perf_counter()
        chips = [align.extract_chip(image, align.landmarks(image, box)) for box in boxes]
        t3 = time.perf_counter()
        if chips:
            embedder.embed_chips(np.stack(chips))
        t4 = time.perf_counter()
        for key, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            totals[key] += seconds
        faces += len(chips)
    result = {key: 1000 * value / len(paths) for key, value in totals.items()}
    result["faces per photo"] = faces / len(paths)
    return result


def main() -> None:
    from large_photos import compose
    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--large", type=int, default=4)
    parser.add_argument("--cnn", type=int, default=5, help="photos for the CNN detector comparison")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; one thread; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    people = lfw_people()
    small = [files[0] for files in people.values()][:: max(1, len(people) // args.small)][: args.small]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        large = []
        for i in range(args.large):
            picks = [Path(small[j]) for j in rng.choice(len(small), 7, replace=False)]
            path = Path(tmp) / f"group_{i}.jpg"
            Image.fromarray(compose(picks, (150, 450), seed=i)).save(path, quality=92)
            large.append(str(path))
        rows = {"LFW 250x250": stages(small), "4000x3000, 7 faces": stages(large)}
    print("| photos | decode ms | detect ms | landmarks + chips ms | descriptors ms | faces per photo | total ms |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        total = sum(v for k, v in r.items() if k != "faces per photo")
        print(f"| {name} | {r['decode']:.1f} | {r['detect']:.1f} | {r['landmarks + chips']:.1f} | "
              f"{r['descriptors']:.1f} | {r['faces per photo']:.2f} | {total:.1f} |")
    import pyfacedlib as pfd
    from pyfacedlib._native import core

    images = [pfd.load_image(p, exif_orientation=False) for p in small]
    detectors = {f"pyfacedlib, {kernel} HOG kernel": core.HogFaceDetector(kernel).detect
                 for kernel in ("portable", "avx2")
                 if kernel == "portable" or pfd.build_info()["hog_kernel"].startswith(kernel)}
    try:
        import dlib

        dlib_detector = dlib.get_frontal_face_detector()
        detectors["dlib-bin"] = lambda image, upsample: dlib_detector(image, upsample)
    except ImportError:
        pass
    print(f"\nHOG detection alone (upsample 1), the same {len(images)} small photos, one thread "
          f"(auto kernel here: {pfd.build_info()['hog_kernel']}):")
    print("| detector | ms a photo |\n|---|---|")
    for name, detect in detectors.items():
        detect(images[0], 1)
        start = time.perf_counter()
        for image in images:
            detect(image, 1)
        print(f"| {name} | {1000 * (time.perf_counter() - start) / len(images):.1f} |")

    cnn_photos = images[:args.cnn]
    cnn = {"pyfacedlib (fast_con)": lambda image: pfd.align.detect(image, detector="cnn", upsample=1)}
    if "dlib-bin" in detectors:
        dlib_cnn = dlib.cnn_face_detection_model_v1(pfd.models.path(pfd.models.CNN_DETECTOR))
        cnn["dlib-bin"] = lambda image: dlib_cnn(image, 1)
    print(f"\nCNN detection (the fallback for HOG misses), upsample 1, {len(cnn_photos)} of the small photos:")
    print("| detector | ms a photo |\n|---|---|")
    for name, detect_cnn in cnn.items():
        detect_cnn(cnn_photos[0])
        start = time.perf_counter()
        for image in cnn_photos:
            detect_cnn(image)
        print(f"| {name} | {1000 * (time.perf_counter() - start) / len(cnn_photos):.1f} |")

    from pyfacedlib.chipcache import ChipCache

    print(f"\nChip-cache alignment (decode, HOG, landmarks, chip, write) of the {len(small)} small photos, "
          "cold cache, in 1 and 2 worker processes:")
    print("| processes | ms a photo |\n|---|---|")
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            ChipCache(cache).faces(small, workers=workers, progress=False)
            print(f"| {workers} | {1000 * (time.perf_counter() - start) / len(small):.1f} |")


if __name__ == "__main__":
    main()
