#!/usr/bin/env bash
# test.sh — the test command: installs what is missing, builds the test build
# (AddressSanitizer + UndefinedBehaviorSanitizer, warnings fatal; the CUDA
# kernels compiled with nvcc when the toolkit is present), and runs every test
# with ctest: unit tests, fixture parity with PyTorch, MPI tests under
# mpiexec -n 2, end-to-end runs of the programs.
#   tools/test.sh [ctest arguments, e.g. -R fixture]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
cmake -S . -B build-test -DFLOWDP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
cmake --build build-test -j"$(nproc)"
ctest --test-dir build-test --output-on-failure --timeout 900 "$@"
