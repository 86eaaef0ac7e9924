"""Feeds corrupted face-net files to the loaders; run as a subprocess by test_model_fuzz.py.

usage: python fuzz_model_files.py MODEL.dat WORKDIR PREFIX_BYTES RANDOM_CASES
Prints one JSON line: counts of rejected (ModelFormatError) and accepted files, and any other error.
"""
import json
import sys
from pathlib import Path

import numpy as np

import pyfacedlib as pfd
from pyfacedlib import ModelFormatError
from pyfacedlib._native import core


def main() -> None:
    model, work, prefix, random_cases = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    data = Path(model).read_bytes()
    rng = np.random.default_rng(7)
    cases = [("truncate", n) for n in range(prefix)]                        # every cut in the first bytes
    cases += [("truncate", int(n)) for n in rng.integers(prefix, len(data), random_cases)]
    cases += [("flip", int(n)) for n in rng.integers(0, 65536, random_cases // 2)]   # structure-dense start
    cases += [("flip", int(n)) for n in rng.integers(0, len(data), random_cases // 2)]
    src = work / "case.dat"
    counts = {"rejected": 0, "accepted": 0, "wrong_exception": []}
    for kind, n in cases:
        if kind == "truncate":
            blob = data[:n]
        else:
            flipped = bytearray(data)
            flipped[n] ^= 1 << int(rng.integers(0, 8))
            blob = bytes(flipped)
        src.write_bytes(blob)
        try:
            kind_found = core.net_kind(str(src))
            pfd.FaceEmbedder(src, threads=1)  # also validates shapes and finiteness
            counts["accepted"] += 1
            assert kind_found == "affine"
        except ModelFormatError as exc:
            if str(src) not in str(exc):
                counts["wrong_exception"].append(f"{kind} {n}: message lacks the file name: {exc}")
            counts["rejected"] += 1
        except Exception as exc:  # noqa: BLE001 - reported, the test fails on it
            counts["wrong_exception"].append(f"{kind} {n}: {type(exc).__name__}: {exc}"[:300])
    counts["cases"] = len(cases)
    print(json.dumps(counts))


if __name__ == "__main__":
    main()
