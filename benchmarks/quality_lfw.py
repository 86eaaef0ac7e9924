"""Face quality on LFW: fit the quality model on peopleDevTrain, measure it on peopleDevTest.

    python benchmarks/quality_lfw.py [--lfw-dir DIR] [--out quality-bench] [--fit] [--workers 2]

Faces are found as in photo collections (HOG, upsample 1, no guessed box; the face nearest the
centre of each image), in two domains: "clean" (LFW's own 250x250 images) and "mixed" (each image
first scaled by a factor drawn from 1, 0.7, 0.5 and 0.4 with a fixed seed: photos of mixed
resolution, where quality matters most). Per face it keeps what `pyfacedlib.quality` reads.

--fit refits the logistic model on peopleDevTrain faces only (both domains) and prints the
coefficients that `pyfacedlib/quality.py` holds. Every run then measures, on peopleDevTest faces
only, the error-versus-reject curve of the face-image-quality literature: all same-person pairs of
the detected faces and as many different-person pairs (evaluate.sample_pairs), decided at dlib's
0.6; a pair's quality is the lower of its two faces'; the lowest-quality fraction of the pairs is
dropped and the error (FNMR, FMR, and their mean) of the rest is reported — for pyfacedlib's quality,
for the detector's score alone and for the face's width alone (the baselines it must beat), and for
an oracle-free random order. Features are cached in OUT (delete it to re-extract).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import pyfacedlib as pfd
from pyfacedlib import datasets, quality
from pyfacedlib.bench import default_lfw_dir, resolve_lfw
from pyfacedlib.evaluate import DLIB_THRESHOLD, sample_pairs

SCALES = (1.0, 0.7, 0.5, 0.4)
REJECT = (0.0, 0.05, 0.1, 0.2, 0.3)
DOMAIN_SEEDS = {"peopleDevTrain": 11, "peopleDevTest": 29}


def _find(job: tuple[str, float]) -> dict | None:
    """The face nearest the centre of one (optionally scaled) image, or None when none is detected."""
    from PIL import Image

    from pyfacedlib.align import AlignmentSettings, find_faces, nearest_to_center

    path, scale = job
    rgb = pfd.load_image(path)
    if scale != 1.0:
        h, w = rgb.shape[:2]
        rgb = np.asarray(Image.fromarray(rgb).resize((round(w * scale), round(h * scale)), Image.Resampling.BILINEAR))
    found = find_faces(rgb, AlignmentSettings.for_photos())
    if not len(found.boxes):
        return None
    i = nearest_to_center(found.boxes, rgb.shape)
    return {"score": float(found.scores[i]), "box": found.boxes[i], "landmarks": found.landmarks[i],
            "chip": found.chips[i]}


def gather(images: Path, lfw_root: Path, split: str, domain: str, out: Path, workers: int) -> dict:
    """Per detected face of `split` in `domain`: label, scale, detector score, box, landmarks,
    descriptor and the chip measures (cached in OUT/split-domain.npz)."""
    cache = out / f"{split}-{domain}.npz"
    if cache.exists():
        return dict(np.load(cache, allow_pickle=False))
    people = datasets.read_lfw_people(lfw_root / f"{split}.txt")[0]
    paths, labels = [], []
    for name, count in people:
        for i in range(1, count + 1):
            paths.append(datasets.lfw_image(images, name, i))
            labels.append(name)
    rng = np.random.default_rng(DOMAIN_SEEDS[split])
    scales = rng.choice(SCALES, size=len(paths)) if domain == "mixed" else np.ones(len(paths))
    with ProcessPoolExecutor(workers) as pool:
        found = list(pool.map(_find, zip(paths, scales.tolist()), chunksize=32))
    keep = [i for i, f in enumerate(found) if f is not None]
    print(f"{split} {domain}: {len(keep)} of {len(paths)} images with a detected face", file=sys.stderr)
    chips = np.stack([found[i]["chip"] for i in keep])
    data = {"label": np.array([labels[i] for i in keep]), "scale": scales[keep],
            "score": np.array([found[i]["score"] for i in keep]),
            "box": np.stack([found[i]["box"] for i in keep]),
            "landmarks": np.stack([found[i]["landmarks"] for i in keep]),
            "descriptor": pfd.FaceEmbedder().embed_chips(chips),
            "sharpness": quality.chip_sharpness(chips)}
    out.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, cache)
    return data


def features(data: dict, descriptors: bool = True) -> np.ndarray:
    """The quality model's features (quality.FEATURES order) of gathered faces."""
    return quality.face_features(data["score"], data["box"], data["sharpness"],
                                 data["descriptor"] if descriptors else None)


def fit(train: list[dict], descriptors: bool, seed: int = 0) -> dict:
    """The quality model on peopleDevTrain: a logistic model of "this pair is decided right at 0.6"
    over all same-person pairs and as many different-person ones, whose input is the sum of the two
    faces' standardised features (so logit = q_a + q_b + c and each face's term is its quality)."""
    from sklearn.linear_model import LogisticRegression

    firsts, seconds, right = [], [], []
    for data in train:
        first, second, same, distance = test_pairs(data, seed)
        x = features(data, descriptors)
        firsts.append(x[first])
        seconds.append(x[second])
        right.append((distance < DLIB_THRESHOLD) == same)
    a, b = np.concatenate(firsts), np.concatenate(seconds)
    both = np.concatenate([a, b])
    mean, scale = both.mean(axis=0), both.std(axis=0)
    model = LogisticRegression(max_iter=1000, class_weight="balanced")
    model.fit((a - mean) / scale + (b - mean) / scale, np.concatenate(right))
    # each face's term: half the pair's intercept, so a face's quality is sigmoid(w.z + c/2)
    return {"mean": mean.round(6).tolist(), "scale": scale.round(6).tolist(),
            "weights": model.coef_[0].round(6).tolist(), "bias": round(float(model.intercept_[0]) / 2, 6)}


def test_pairs(data: dict, seed: int = 0):
    """All same-person pairs of the faces and as many different-person ones, with their distances."""
    pairs = sample_pairs(data["label"], 10**9, seed, folds=1)
    desc = data["descriptor"].astype(np.float64)
    return pairs.first, pairs.second, pairs.same, np.linalg.norm(desc[pairs.first] - desc[pairs.second], axis=1)


def error_reject(pair_quality: np.ndarray, same: np.ndarray, distance: np.ndarray, seed: int = 0) -> dict:
    """Errors at dlib's 0.6 after dropping the lowest-quality fractions of the pairs (ties in random
    order): FNMR, FMR and their mean per fraction in REJECT, and the mean error over 0..30 % (area)."""
    order = np.random.default_rng(seed).permutation(len(same))
    order = order[np.argsort(pair_quality[order], kind="stable")]
    wrong = (distance < DLIB_THRESHOLD) != same

    def at(fraction: float) -> tuple[float, float]:
        kept = order[int(round(fraction * len(order))):]
        return float(wrong[kept][same[kept]].mean()), float(wrong[kept][~same[kept]].mean())

    curve = {f: at(f) for f in REJECT}
    area = float(np.mean([np.mean(at(f)) for f in np.linspace(0, 0.3, 31)]))
    return {"curve": {str(f): {"fnmr": a, "fmr": b, "error": (a + b) / 2} for f, (a, b) in curve.items()},
            "area": area}


def cost() -> str:
    """The quality's cost beside the embedding it accompanies: 256 dlib-johns chips, best of 3."""
    import time

    from _common import johns_chips

    chips = np.concatenate([johns_chips()[0]] * 5)[:256]
    embedder = pfd.FaceEmbedder()
    descriptors = embedder.embed_chips(chips)
    boxes, scores = np.tile([0, 0, 100, 100], (len(chips), 1)), np.ones(len(chips))

    def best(work) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            work()
            times.append(time.perf_counter() - start)
        return min(times)

    embed = best(lambda: embedder.embed_chips(chips))
    score = best(lambda: quality.face_quality(scores, boxes, chips, descriptors))
    return (f"quality of {len(chips)} faces: {1000 * score:.1f} ms; embedding them: {1000 * embed:.1f} ms "
            f"({100 * score / embed:.1f}%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lfw-dir", default=None)
    parser.add_argument("--out", default="quality-bench")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fit", action="store_true", help="refit the models on peopleDevTrain, print them and "
                                                           "measure the fresh fit (default: pyfacedlib's)")
    args = parser.parse_args()
    images, _, _ = resolve_lfw(args.lfw_dir or default_lfw_dir(), None)
    out = Path(args.out)
    domains = ("clean", "mixed")
    models = {"with descriptor": quality.MODEL, "without descriptor": quality.MODEL_WITHOUT_DESCRIPTOR}
    if args.fit:
        train = [gather(images, images.parent, "peopleDevTrain", d, out, args.workers) for d in domains]
        mean_descriptor = np.concatenate([t["descriptor"] for t in train]).astype(np.float64).mean(axis=0)
        quality.MEAN_DESCRIPTOR = tuple(mean_descriptor.round(6).tolist())
        models = {"with descriptor": fit(train, True), "without descriptor": fit(train, False)}
        print("fitted on peopleDevTrain (pyfacedlib/quality.py holds these):")
        print(f"MEAN_DESCRIPTOR = {quality.MEAN_DESCRIPTOR}")
        print(f"MODEL = {models['with descriptor']}")
        print(f"MODEL_WITHOUT_DESCRIPTOR = {models['without descriptor']}")
    rows = []
    for domain in domains:
        data = gather(images, images.parent, "peopleDevTest", domain, out, args.workers)
        first, second, same, distance = test_pairs(data)
        scores = {"pyfacedlib quality (with descriptor)":
                  quality.quality_from_features(features(data), models["with descriptor"]),
                  "pyfacedlib quality (without descriptor)":
                  quality.quality_from_features(features(data, False), models["without descriptor"]),
                  "detector score alone": data["score"],
                  "face width alone": (data["box"][:, 2] - data["box"][:, 0]).astype(np.float64),
                  "random order": np.random.default_rng(1).random(len(data["score"]))}
        for name, q in scores.items():
            result = error_reject(np.minimum(q[first], q[second]), same, distance)
            rows.append({"domain": domain, "order": name, "faces": len(q), "same_pairs": int(same.sum()),
                         "different_pairs": int((~same).sum()), **result})
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    print("\n| domain | pairs dropped by | " + " | ".join(f"error, {int(100 * f)}% dropped" for f in REJECT)
          + " | mean error, 0–30% dropped |")
    print("|---|---|" + "---|" * (len(REJECT) + 1))
    for r in rows:
        cells = " | ".join(f"{100 * r['curve'][str(f)]['error']:.2f}%" for f in REJECT)
        print(f"| {r['domain']} ({r['faces']} faces; {r['same_pairs']} + {r['different_pairs']} pairs) | {r['order']} "
              f"| {cells} | {100 * r['area']:.3f}% |")
    print("\n" + cost())


if __name__ == "__main__":
    main()
