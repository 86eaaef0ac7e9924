"""Search a million descriptors: exact (numpy/BLAS, FAISS flat) against approximate (FAISS HNSW, IVF):
build time, ms per query, recall@1 against exact, memory.

Collection: the 13,233 LFW descriptors (shipped model) plus perturbed copies up to --size (each copy
= an LFW descriptor + Gaussian noise, norm ~0.28: near-duplicates, the hard case for approximate
search). Queries: other perturbed LFW descriptors.

    PYTHONPATH=. PYFACEDLIB_DATA=../shared/datasets python benchmarks/search_1m.py [--size 1000000]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import cpu_model, embedded, lfw_people  # noqa: E402


def main() -> None:
    from pyfacedlib._system import available_cpus
    from pyfacedlib.index import DescriptorIndex, IndexSettings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--sigma", type=float, default=0.025, help="noise per dimension of the copies")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {available_cpus()} CPUs; "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE')}")
    paths = [f for files in lfw_people().values() for f in files]
    base = embedded(paths)
    rng = np.random.default_rng(0)
    copies = args.size - len(base)
    origin = rng.integers(0, len(base), copies)
    collection = np.concatenate([base, base[origin] + rng.normal(0, args.sigma, (copies, 128)).astype(np.float32)])
    queries = base[rng.integers(0, len(base), args.queries)] + rng.normal(0, args.sigma, (args.queries, 128)).astype(
        np.float32)
    print(f"{len(collection):,} descriptors ({collection.nbytes / 2**20:.0f} MiB), {len(queries)} queries")

    rows = []
    truth = None
    configs = [("exact (numpy)", "exact", IndexSettings()), ("FAISS flat", "flat", IndexSettings())]
    configs += [(f"FAISS HNSW32 efSearch {ef}", "hnsw", IndexSettings(hnsw_ef_search=ef)) for ef in (64, 128, 256)]
    configs += [(f"FAISS IVF{lists},Flat nprobe {probe}", "ivf", IndexSettings(ivf_lists=lists, ivf_probe=probe))
                for lists in (4096,) for probe in (16, 64)]
    built: dict = {}
    for name, kind, settings in configs:
        key = (kind, settings.hnsw_m, settings.ivf_lists)
        start = time.perf_counter()
        if key in built:  # same structure, other search parameter: reuse it
            index = built[key]
            index.settings = settings
            if kind == "hnsw":
                index._faiss_index.hnsw.efSearch = settings.hnsw_ef_search
            if kind == "ivf":
                index._faiss_index.nprobe = settings.ivf_probe
            build = built[key].build_seconds
        else:
            index = DescriptorIndex(collection, kind, settings)
            build = time.perf_counter() - start
            index.build_seconds = build
            built[key] = index
        start = time.perf_counter()
        distances, found = index.search(queries, 10)
        batch_ms = 1000 * (time.perf_counter() - start) / len(queries)
        start = time.perf_counter()
        for q in queries[:50]:
            index.search(q, 10)
        single_ms = 1000 * (time.perf_counter() - start) / 50
        if truth is None:
            truth = found[:, 0]
        recall = float(np.mean(found[:, 0] == truth))
        rows.append((name, build, batch_ms, single_ms, recall, index.memory_bytes / 2**20))
        print(f"{name}: build {build:.1f} s, {batch_ms:.3f} ms/query batched, {single_ms:.3f} ms one at a time, "
              f"recall@1 {recall:.4f}, {index.memory_bytes / 2**20:.0f} MiB", flush=True)
    print()
    print("| index | build s | ms/query (1,000 at once) | ms/query (one at a time) | recall@1 vs exact | memory MiB |")
    print("|---|---|---|---|---|---|")
    for name, build, batch_ms, single_ms, recall, mib in rows:
        print(f"| {name} | {build:.1f} | {batch_ms:.3f} | {single_ms:.2f} | {recall:.4f} | {mib:.0f} |")


if __name__ == "__main__":
    main()
