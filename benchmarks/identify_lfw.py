"""LFW identification, closed and open set: pyfacedlib's Gallery rules against face_recognition's
convention, on the same descriptors.

Gallery: the first image (sorted by name) of each of the 1,680 LFW people with >= 2 images.
Known probes: their other images (7,484). Unknown probes: the 4,069 people with one image.
Descriptors: the shipped model on the chip cache's chips (the alignment bench-lfw uses).

    PYTHONPATH=. PYFACEDLIB_DATA=../shared/datasets python benchmarks/identify_lfw.py

Rows: nearest identity (the Gallery default) / k-NN vote / linear SVM, each with rank-1 and rank-5,
DIR at FPIR 1 % and 10 % (thresholds read off the unknown probes: the best any fixed threshold can
do), and the result at the gallery's *self-calibrated* threshold (chosen from the gallery alone,
without any probe); face_recognition's convention: compare_faces at 0.6 against every gallery
image, the first match in gallery order (its README's example), and the nearest at 0.6.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import embedded, lfw_people  # noqa: E402


def main() -> None:
    from pyfacedlib.evaluate import open_set_identification
    from pyfacedlib.gallery import Gallery

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="write the figures as JSON")
    args = parser.parse_args()
    people = lfw_people()
    gallery_paths = [files[0] for files in people.values() if len(files) >= 2]
    gallery_names = [name for name, files in people.items() if len(files) >= 2]
    probe_paths = [f for files in people.values() if len(files) >= 2 for f in files[1:]]
    probe_names = [name for name, files in people.items() if len(files) >= 2 for _ in files[1:]]
    unknown_paths = [files[0] for files in people.values() if len(files) == 1]
    print(f"LFW: {len(gallery_paths)} enrolled people, {len(probe_paths)} known probes, "
          f"{len(unknown_paths)} unknown probes")
    start = time.perf_counter()
    descriptors = embedded(gallery_paths + probe_paths + unknown_paths)
    print(f"aligned and embedded {len(descriptors)} images in {time.perf_counter() - start:.0f} s")
    g = len(gallery_paths)
    gallery_d, probe_d = descriptors[:g], descriptors[g:g + len(probe_paths)]
    unknown_d = descriptors[g + len(probe_paths):]

    gallery = Gallery.from_descriptors(gallery_d, gallery_names, gallery_paths)
    calibration = gallery.calibration
    print(f"self-calibrated threshold {calibration.threshold:.4f} (target FPIR {calibration.target_fpir:g}, "
          f"from {calibration.impostor_samples} gallery faces; estimated FPIR {calibration.estimated_fpir:.4f})")
    rows = {}
    for rule in ("nearest", "knn", "svm"):
        t0 = time.perf_counter()
        known = gallery.match_descriptors(probe_d, threshold=np.inf, k=5, classifier=rule)
        unknown = gallery.match_descriptors(unknown_d, threshold=np.inf, k=5, classifier=rule)
        seconds = time.perf_counter() - t0
        known_dist = np.array([m.distance for m in known])
        correct = np.array([m.identity == name for m, name in zip(known, probe_names)])
        rank5 = np.mean([name in [c for c, _ in m.candidates[:5]] for m, name in zip(known, probe_names)])
        unknown_dist = np.array([m.distance for m in unknown])
        t = calibration.threshold
        rows[rule] = {
            "rank1": float(correct.mean()), "rank5": float(rank5),
            **open_set_identification(known_dist, correct, unknown_dist),
            "calibrated": {"threshold": t, "fpir": float(np.mean(unknown_dist <= t)),
                           "dir": float(np.mean(correct & (known_dist <= t)))},
            "at_0_6": {"fpir": float(np.mean(unknown_dist <= 0.6)),
                       "dir": float(np.mean(correct & (known_dist <= 0.6)))},
            "ms_per_probe": 1000 * seconds / (len(known) + len(unknown)),
        }
    # face_recognition's convention: compare_faces(known, probe, tolerance=0.6), first True in gallery order
    from pyfacedlib.evaluate import distance_matrix

    def first_match(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        within = distance_matrix(d, gallery_d) <= 0.6
        has = within.any(axis=1)
        return has, np.where(has, within.argmax(axis=1), -1)

    has, first = first_match(probe_d)
    names = np.asarray(gallery_names)
    fr_correct = has & (names[np.maximum(first, 0)] == np.asarray(probe_names))
    unknown_has, _ = first_match(unknown_d)
    rows["face_recognition first match at 0.6"] = {"dir": float(fr_correct.mean()), "fpir": float(unknown_has.mean())}

    print()
    print("| rule | rank-1 | rank-5 | DIR @ FPIR 1% | DIR @ FPIR 10% | self-calibrated threshold: DIR / FPIR | "
          "at 0.6: DIR / FPIR |")
    print("|---|---|---|---|---|---|---|")
    for rule in ("nearest", "knn", "svm"):
        r = rows[rule]
        print(f"| {rule} | {100 * r['rank1']:.2f}% | {100 * r['rank5']:.2f}% | {100 * r['fpir_0.01']['dir']:.2f}% "
              f"| {100 * r['fpir_0.1']['dir']:.2f}% | {100 * r['calibrated']['dir']:.2f}% / "
              f"{100 * r['calibrated']['fpir']:.2f}% (t={r['calibrated']['threshold']:.3f}) | "
              f"{100 * r['at_0_6']['dir']:.2f}% / {100 * r['at_0_6']['fpir']:.2f}% |")
    r = rows["face_recognition first match at 0.6"]
    print(f"| face_recognition: first match at 0.6 | – | – | – | – | – | "
          f"{100 * r['dir']:.2f}% / {100 * r['fpir']:.2f}% |")
    if args.out:
        Path(args.out).write_text(json.dumps({"calibration": calibration.summary(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
