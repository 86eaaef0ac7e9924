"""Archive throughput: images/s and faces/s with 1, 2 and 4 workers, the local engine (threads)
against Ray Data (detection actors + one embedding actor), side by side in one run.

Photos: the first --images LFW photos (250x250). Ray runs on this machine (ray.init with one CPU
per actor, started before the clock: on a cluster Ray is already running; its start-up is printed
separately); "ray" is the default fused stages (each actor detects and embeds), "ray-split" a
detection pool and one embedding actor (the layout for GPU embedding). Output: Parquet parts in a
temporary folder; the clock includes the actors' start (model loads).

    PYTHONPATH=$PWD PYFACEDLIB_DATA=../shared/datasets python benchmarks/archive_engines.py [--images 600]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, lfw_people  # noqa: E402


def main() -> None:
    import ray

    from pyfacedlib._system import available_cpus
    from pyfacedlib.archive import ArchiveConfig, embed_archive, start_local_ray

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--workers", default="1,2,4")
    args = parser.parse_args()
    files = [f for files in lfw_people().values() for f in files][: args.images]
    print(f"CPU: {cpu_model()}, {available_cpus()} CPUs; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}; "
          f"{len(files)} LFW photos; Ray {ray.__version__}")
    rows = []
    runs = [(int(w), engine) for w in args.workers.split(",") for engine in ("local", "ray")]
    runs.insert(4, (2, "ray-split"))
    for workers, engine in runs:
        startup = 0.0
        if engine != "local":
            start = time.perf_counter()
            start_local_ray(workers + (engine == "ray-split"))
            startup = time.perf_counter() - start
        config = ArchiveConfig(engine=engine.split("-")[0], workers=workers,
                               stages="split" if engine == "ray-split" else "auto")
        with tempfile.TemporaryDirectory() as tmp:
            report = embed_archive(files, Path(tmp) / "out.parquet", progress=False, config=config)
        if engine != "local":
            ray.shutdown()
        rows.append((workers, engine, report.seconds, report.processed / report.seconds,
                     report.faces / report.seconds, startup))
        print(f"{engine} {workers} workers: {report.summary()}"
              + (f"; Ray start-up {startup:.1f} s" if startup else ""), flush=True)
    print()
    print("| workers | engine | seconds | images/s | faces/s | Ray against local |")
    print("|---|---|---|---|---|---|")
    local = {w: s for w, e, s, *_ in rows if e == "local"}
    for workers, engine, seconds, images, faces, startup in rows:
        versus = f"{100 * (seconds / local[workers] - 1):+.0f}% time (start-up {startup:.1f} s not counted)" \
            if engine != "local" else ""
        print(f"| {workers} | {engine} | {seconds:.1f} | {images:.1f} | {faces:.1f} | {versus} |")


if __name__ == "__main__":
    main()
