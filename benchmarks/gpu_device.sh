#!/usr/bin/env bash
# On a GPU machine without package registries (the device tool: carry [".gpu"] from gpu_gather.py):
# builds the CPU and CUDA modules in place from the carried dlib sdist, then runs gpu_check.py.
#   bash benchmarks/gpu_device.sh            (writes gpu_check.json/.md into $OUT, else ./gpu-check)
# Needs there: python3 with setuptools, pybind11, cmake, ninja, numpy and the nvidia-cudnn-cu13,
# nvidia-cublas, nvidia-curand and nvidia-cusolver wheels; nvcc. CUDAARCHS defaults to 90 (H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."
GPU_DIR="${GPU_DIR:-.gpu}"
OUT_DIR="${OUT:-gpu-check}"
mkdir -p "$OUT_DIR"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/pfd-site "$GPU_DIR"/scipy_openblas32-*.whl
export PYTHONPATH="/tmp/pfd-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYFACEDLIB_DLIB_SOURCE="$PWD/$GPU_DIR/dlib-20.0.1.tar.gz" PYFACEDLIB_CUDA=ON
export CUDAARCHS="${CUDAARCHS:-90}" PYFACEDLIB_MODELS="$PWD/$GPU_DIR/models"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
start=$(date +%s)
python3 setup.py -q build_ext --inplace 2>&1 | tail -n 30 | tee "$OUT_DIR/build.log"
echo "build: $(( $(date +%s) - start )) s" | tee -a "$OUT_DIR/build.log"
PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --data "$GPU_DIR/data.npz" --out "$OUT_DIR" 2>&1 | tee "$OUT_DIR/check.log"
