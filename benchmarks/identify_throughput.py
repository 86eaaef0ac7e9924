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
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _run(command: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1):
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def main() -> None:
    from pyfacedlib._system import available_cpus
    from pyfacedlib.bench import default_lfw_dir

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=50, help="people enrolled (one photo each)")
    parser.add_argument("--photos", type=int, default=200, help="photos to identify")
    args = parser.parse_args()
    if shutil.which("face_recognition") is None:
        sys.exit("face_recognition's CLI is not installed: pip install --no-deps face_recognition click")
    lfw = default_lfw_dir() / "lfw-deepfunneled"
    people = [p for p in sorted(lfw.iterdir()) if p.is_dir()]
    several = [p for p in people if len(list(p.glob("*.jpg"))) >= 3][:args.people]
    singles = [p for p in people if len(list(p.glob("*.jpg"))) == 1]
    cpus = available_cpus()
    print(f"CPU: {platform.processor() or platform.machine()}, {cpus} CPUs; OPENBLAS_CORETYPE="
          f"{os.environ.get('OPENBLAS_CORETYPE')}")
    with tempfile.TemporaryDirectory() as tmp:
        known, check, empty = Path(tmp) / "known", Path(tmp) / "check", Path(tmp) / "empty"
        for folder in (known, check, empty):
            folder.mkdir()
        truth = {}
        for person in several:
            files = sorted(person.glob("*.jpg"))
            shutil.copy(files[0], known / f"{person.name}.jpg")
            for f in files[1:]:
                truth[f.name] = person.name
        probes = sorted(truth)[: args.photos * 3 // 4]
        strangers = [sorted(p.glob("*.jpg"))[0] for p in singles[: args.photos - len(probes)]]
        for person in several:
            for f in sorted(person.glob("*.jpg"))[1:]:
                if f.name in probes:
                    shutil.copy(f, check / f.name)
        for f in strangers:
            shutil.copy(f, check / f.name)
            truth[f.name] = "unknown"
        n_known, n_check = len(list(known.iterdir())), len(list(check.iterdir()))
        print(f"{n_known} known people (one photo each), {n_check} photos to check "
              f"({len(probes)} of known people, {len(strangers)} of strangers)")
        env = dict(os.environ)

        fr_enrol, _ = _run(["face_recognition", "--cpus", str(cpus), str(known), str(empty)], env)
        fr_total, fr_out = _run(["face_recognition", "--cpus", str(cpus), "--show-distance", "true",
                                 str(known), str(check)], env)
        gallery = Path(tmp) / "g.parquet"
        pfd_cmd = [sys.executable, "-m", "pyfacedlib"]
        ours_enrol, _ = _run([*pfd_cmd, "enrol", str(known), str(gallery)], env)
        ours_identify, ours_out = _run([*pfd_cmd, "identify", str(gallery), str(check)], env)

    fr_names: dict[str, set[str]] = {}
    for line in fr_out.splitlines():
        parts = line.split(",")
        if len(parts) >= 2 and parts[0].endswith(".jpg"):
            fr_names.setdefault(Path(parts[0]).name, set()).add(parts[1])
    ours: dict[str, set[str]] = {}
    for row in csv.DictReader(io.StringIO(ours_out)):
        ours.setdefault(Path(row["path"]).name, set()).add(row["identity"])

    def score(names: dict[str, set[str]], unknown: str) -> tuple[float, float, float]:
        known_photos = [f for f, who in truth.items() if who != "unknown" and f in probes]
        stranger_photos = [f for f, who in truth.items() if who == "unknown"]
        right = sum(names.get(f, set()) == {truth[f]} for f in known_photos) / len(known_photos)
        wrong = sum(bool(names.get(f, set()) - {truth[f], unknown, "no_persons_found", "no_faces_found"})
                    for f in known_photos) / len(known_photos)
        accepted = sum(bool(names.get(f, set()) - {unknown, "no_persons_found", "no_faces_found"})
                       for f in stranger_photos) / len(stranger_photos)
        return right, wrong, accepted

    fr_identify = fr_total - fr_enrol
    rows = [("face_recognition CLI (--cpus %d, tolerance 0.6)" % cpus, fr_enrol, fr_identify,
             score(fr_names, "unknown_person")),
            ("pyfacedlib enrol + identify (calibrated threshold)", ours_enrol, ours_identify, score(ours, "unknown"))]
    print()
    print("| tool | enrol: s (images/s) | identify: s (images/s) | known people named right only | "
          "named wrong | strangers named |")
    print("|---|---|---|---|---|---|")
    for name, enrol_s, identify_s, (right, wrong, accepted) in rows:
        print(f"| {name} | {enrol_s:.1f} ({n_known / enrol_s:.1f}) | {identify_s:.1f} ({n_check / identify_s:.1f}) | "
              f"{100 * right:.1f}% | {100 * wrong:.1f}% | {100 * accepted:.1f}% |")
    print(f"\nspeed-up: enrol {fr_enrol / ours_enrol:.2f}x, identify {fr_identify / ours_identify:.2f}x "
          "(wall clock, process start-up included on both sides)")


if __name__ == "__main__":
    main()
