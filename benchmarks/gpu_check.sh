#!/usr/bin/env bash
# The GPU backend's checks on one NVIDIA GPU (H100/H200 class), in one command: build fastntk there,
# run the GPU tests (marker gpu: CuPy in, CuPy out, equal to the CPU backend; out= on the device),
# then benchmarks/compare_gpu.py (the FC ReLU depth-3 NNGP+NTK, N = 50,000, d = 784, float32, beside
# the bare cuBLAS GEMM of the same shape and JAX's jitted recursion). Needs CuPy, scikit-build-core,
# pybind11, CMake and pytest on that machine (its image has them); results under $OUT (or ./gpu-out).
#
# What it must show (issue 12): every gpu test passes; compare_gpu's fastntk/gemm ratio <= 2 and
# jax/fastntk ratio >= 5; normwise error of the float32 kernels against float64 CPU ones <= 1e-5.
#
#   bash benchmarks/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-build-isolation --no-deps --no-index --target /tmp/fastntk-site . 2>&1 | tail -5
export PYTHONPATH=/tmp/fastntk-site
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
(cd /tmp && python3 -m pytest -q -p no:cacheprovider -m gpu -rs "$OLDPWD/tests/backend/test_device.py") 2>&1 \
    | tee "$out/gpu_tests.txt"
python3 benchmarks/compare_gpu.py --N 50000 --d 784 2>&1 | tee "$out/compare_gpu.jsonl"
