"""Enrol and identify throughput, end to end from the command line, against face_recognition's own
CLI on the same photos in the same run.

Known folder: one LFW photo per person, named by the person (face_recognition's convention:
KNOWN/Name.jpg). Photos to check: the other photos of those people plus photos of people never
enrolled. Both tools detect with dlib's HOG detector at upsample 1 and use the same 5-point
alignment and the same network; face_recognition computes each descriptor with dlib's binding
(one face at a time, one process per CPU with --cpus), pyfacedlib detects on all cores in threads
and embeds in batches with its folded forward pass.

    PYTHONPATH=. PYFACEDLIB_DATA=../shared/datasets python benchmarks/identify_throughput.py [--people 50]

Needs the `face_recognition` package (pip install --no-deps face_recognition; its dlib is dlib-bin).
"""
from __future__ import annotations

import argparse
import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, lfw_people  # noqa: E402


def _run(command: list[str], photos: list[str] | None = None, ours: bool = True) -> tuple[float, str]:
    """Runs a tool, timed; stops the benchmark when it fails: an exit code other than 0 (pyfacedlib:
    0 or 3, 3 = some inputs unreadable, and then only when every photo still got its rows), or output
    without a row for each of `photos` (file names) — a tool that did not run must not print numbers."""
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    accepted = (0, 3) if ours and photos is not None else (0,)
    if done.returncode not in accepted:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    if photos is not None:
        got = set(_names(done.stdout, ours))
        missing = sorted(set(photos) - got)
        if missing:
            sys.exit(f"{' '.join(command)} (exit {done.returncode}) gave no row for {len(missing)} of {len(photos)} "
                     f"photos (first: {missing[:3]}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def _names(output: str, ours: bool) -> dict[str, set[str]]:
    """photo file name -> names printed for it (sentinels dropped)."""
    sentinels = {"unknown", "unknown_person", "no_persons_found", "no_faces_found"}
    names: dict[str, set[str]] = {}
    rows = csv.DictReader(io.StringIO(output)) if ours else (
        {"path": line.split(",")[0], "identity": line.split(",")[1]} for line in output.splitlines() if "," in line)
    for row in rows:
        names.setdefault(Path(row["path"]).name, set())
        if row["identity"] not in sentinels:
            names[Path(row["path"]).name].add(row["identity"])
    return names


def _score(names: dict[str, set[str]], truth: dict[str, set[str]]) -> tuple[float, float, float]:
    """(fraction of the enrolled people in the photos who were named, wrong names per 100 photos,
    fraction of photos whose names are exactly the enrolled people in them)."""
    placed = sum(len(who) for who in truth.values())
    named = sum(len(names.get(photo, set()) & who) for photo, who in truth.items())
    wrong = sum(len(names.get(photo, set()) - who) for photo, who in truth.items())
    exact = sum(names.get(photo, set()) == who for photo, who in truth.items())
    return named / max(placed, 1), 100 * wrong / len(truth), exact / len(truth)


def main() -> None:
    from large_photos import compose
    from PIL import Image

    from pyfacedlib._system import available_cpus
    from pyfacedlib.gallery import Gallery

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=50, help="people enrolled (one photo each)")
    parser.add_argument("--photos", type=int, default=200, help="LFW photos to identify")
    parser.add_argument("--large", type=int, default=12, help="12-MP photos to identify")
    args = parser.parse_args()
    if shutil.which("face_recognition") is None:
        sys.exit("face_recognition's CLI is not installed: pip install --no-deps face_recognition click")
    people = lfw_people()
    several = [name for name, files in people.items() if len(files) >= 3][:args.people]
    singles = [name for name, files in people.items() if len(files) == 1]
    cpus = available_cpus()
    print(f"CPU: {cpu_model()}, {cpus} CPUs; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        known, empty = Path(tmp) / "known", Path(tmp) / "empty"
        small, large = Path(tmp) / "lfw_photos", Path(tmp) / "large_photos"
        for folder in (known, empty, small, large):
            folder.mkdir()
        for name in several:
            shutil.copy(people[name][0], known / f"{name}.jpg")
        others = [(f, name) for name in several for f in people[name][1:]]
        picks = [others[i] for i in rng.choice(len(others), args.photos * 3 // 4, replace=False)]
        picks += [(people[name][0], "") for name in singles[: args.photos - len(picks)]]
        truth_small = {}
        for f, name in picks:
            shutil.copy(f, small / Path(f).name)
            truth_small[Path(f).name] = {name} - {""}
        truth_large = {}
        for i in range(args.large):
            chosen = [others[j] for j in rng.choice(len(others), 5, replace=False)]
            strangers = [(people[singles[j]][0], "") for j in rng.choice(len(singles), 2, replace=False)]
            photo = compose([Path(f) for f, _ in chosen + strangers], (150, 450), seed=i)
            Image.fromarray(photo).save(large / f"group_{i:03d}.jpg", quality=92)
            truth_large[f"group_{i:03d}.jpg"] = {name for _, name in chosen}
        print(f"{len(several)} known people (one photo each, KNOWN/Name.jpg); {len(truth_small)} LFW photos "
              f"(250x250; {args.photos * 3 // 4} of known people); {len(truth_large)} 4000x3000 photos with 7 faces "
              "each (5 known people, 2 strangers; faces 150-450 px)")

        gallery = Path(tmp) / "g.parquet"
        ours = [sys.executable, "-m", "pyfacedlib"]
        fr = ["face_recognition", "--cpus", str(cpus)]
        fr_enrol, _ = _run([*fr, str(known), str(empty)], ours=False)
        ours_enrol, _ = _run([*ours, "enrol", str(known), str(gallery)])
        if not gallery.is_file():
            sys.exit(f"pyfacedlib enrol exited 0 but wrote no {gallery}")
        print(f"enrol {len(several)} photos: face_recognition {fr_enrol:.1f} s, pyfacedlib {ours_enrol:.1f} s "
              f"({fr_enrol / ours_enrol:.2f}x)")
        print()
        print("| photos | tool | seconds | photos/s | enrolled people named | wrong names per 100 photos | "
              "photos named exactly right |")
        print("|---|---|---|---|---|---|---|")
        for label, folder, truth in (("LFW 250x250", small, truth_small), ("4000x3000, 7 faces", large, truth_large)):
            photos = list(truth)
            fr_total, fr_out = _run([*fr, str(known), str(folder)], photos, ours=False)
            fr_seconds = fr_total - fr_enrol  # its CLI enrols on every run: the enrolment time taken off
            ours_seconds, ours_out = _run([*ours, "identify", str(gallery), str(folder)], photos)
            fixed_seconds, fixed_out = _run([*ours, "identify", str(gallery), str(folder), "--threshold", "0.6"],
                                            photos)
            for tool, seconds, names in (("face_recognition CLI, tolerance 0.6", fr_seconds, _names(fr_out, False)),
                                         ("pyfacedlib identify (calibrated threshold)", ours_seconds,
                                          _names(ours_out, True)),
                                         ("pyfacedlib identify --threshold 0.6", fixed_seconds,
                                          _names(fixed_out, True))):
                found, wrong, exact = _score(names, truth)
                print(f"| {label} | {tool} | {seconds:.1f} | {len(truth) / seconds:.1f} | {100 * found:.1f}% | "
                      f"{wrong:.1f} | {100 * exact:.1f}% |")
            print(f"| {label} | speed-up (calibrated run) | {fr_seconds / ours_seconds:.2f}x | | | | |", flush=True)
        threshold = Gallery.load(gallery).threshold
        print(f"\nthe gallery's calibrated threshold: {threshold:.3f}")


if __name__ == "__main__":
    main()
