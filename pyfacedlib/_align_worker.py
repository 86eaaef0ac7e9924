"""Alignment worker process for the chip cache (started by ChipCache with JOBS.json as argument).

Reads [source, sha256, settings, folder] jobs, aligns each (pyfacedlib.chipcache._align_one) and
prints one JSON record per line as it finishes. Started as a fresh interpreter by ChipCache, so it
never inherits threads through fork and never re-imports the caller's __main__.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict


def main() -> None:
    from .align import AlignmentSettings
    from .chipcache import _align_one

    with open(sys.argv[-1]) as f:
        jobs = json.load(f)
    for source, sha, settings, folder in jobs:
        record = _align_one((source, sha, AlignmentSettings(**settings), folder))
        sys.stdout.write(json.dumps(asdict(record)) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
