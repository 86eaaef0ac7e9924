"""Gathers into one folder (default .gpu/, git-ignored) what benchmarks/gpu_device.sh needs on a
GPU machine that reaches no package registry, within the device tool's 64 MiB:

- dlib-20.0.1.tar.gz, the pinned source distribution (setup.py checks its sha256 there too);
- the scipy-openblas32 wheel (the one build requirement that GPU image lacks; it has nvcc, CMake,
  ninja, pybind11, numpy and the nvidia-cudnn-cu13 / cuBLAS / cuRAND / cuSOLVER wheels);
- the shipped face model (22 MB: the checks use aligned chips, so no detector or landmark model);
- chips.png: the 55 dlib-johns chips, then LFW chips of identities with >= 5 photos (for the
  parity check and for 175-face training batches), stacked into one lossless PNG (half the size
  of compressed arrays); data.npz: their identity labels and the descriptors this machine's CPU
  build gives them (the parity reference).

    PYTHONPATH=. PYFACEDLIB_DATA=../shared/datasets python benchmarks/gpu_gather.py [--lfw-chips 500]

Then, with the device tool: carry [".gpu"], command `bash benchmarks/gpu_device.sh` (README "CUDA").
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _common import cpu_model, johns_chips, lfw_people
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
LIMIT_MIB = 64


def lfw_identity_chips(count: int, per_identity: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Up to `per_identity` chips of each LFW person with >= 5 photos, until `count` chips."""
    from _common import aligned_faces

    paths, labels = [], []
    for name, files in lfw_people().items():
        if len(files) < 5:
            continue
        take = files[:min(per_identity, count - len(paths))]
        if len(take) < 5:
            break
        paths += take
        labels += [name] * len(take)
    faces = aligned_faces(paths, labels)
    if faces.skipped:
        sys.exit(f"unreadable LFW photos: {faces.skipped}")
    names = sorted(set(labels))
    return faces.chips, np.array([names.index(n) for n in faces.labels], np.int64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / ".gpu"))
    parser.add_argument("--lfw-chips", type=int, default=500)
    args = parser.parse_args()

    import pyfacedlib as pfd
    sys.path.insert(0, str(ROOT))
    import setup as build  # the pinned dlib version and sha256, nothing duplicated

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sdist = out / f"dlib-{build.DLIB_VERSION}.tar.gz"
    if not sdist.exists() or build.file_sha256(sdist) != build.DLIB_SDIST_SHA256:
        with tempfile.TemporaryDirectory() as download:   # the build's own download: hash before code
            shutil.copyfile(build.download_sdist(Path(download)), sdist)
    build.verify_sdist(sdist)
    for old in out.glob("scipy_openblas32-*.whl"):
        old.unlink()
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--platform", "manylinux_2_28_x86_64",
                    "--platform", "manylinux_2_17_x86_64", "--platform", "manylinux2014_x86_64",
                    "scipy-openblas32", "-d", str(out)], check=True)
    model = Path(pfd.models.path(pfd.models.FACE_RECOGNITION))
    models_dir = out / "models"
    models_dir.mkdir(exist_ok=True)
    shutil.copyfile(model, models_dir / model.name)

    johns, johns_labels = johns_chips()
    lfw, lfw_labels = lfw_identity_chips(args.lfw_chips)
    embedder = pfd.FaceEmbedder(device="cpu")
    reference = {"johns": embedder.embed_chips(johns), "lfw": embedder.embed_chips(lfw)}
    Image.fromarray(np.concatenate([johns, lfw]).reshape(-1, lfw.shape[2], 3)).save(out / "chips.png", compress_level=9)
    np.savez_compressed(out / "data.npz", johns_count=len(johns), johns_labels=np.asarray(johns_labels, np.int64),
                        lfw_labels=lfw_labels, johns_cpu=reference["johns"], lfw_cpu=reference["lfw"])
    (out / "reference.json").write_text(json.dumps({"cpu": cpu_model(), "build": pfd.build_info()}, indent=1,
                                                   default=str))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 2**20
    print(f"{out}: {size:.1f} MiB ({len(johns)} johns chips, {len(lfw)} LFW chips of "
          f"{len(set(lfw_labels.tolist()))} identities, CPU reference descriptors from {cpu_model()})")
    if size > LIMIT_MIB - 4:
        sys.exit(f"{out} is {size:.1f} MiB: the device tool carries at most {LIMIT_MIB} MiB with the working tree")


if __name__ == "__main__":
    main()
