#!/usr/bin/env bash
# test.sh — the test command: installs what is missing, builds the test build
# (AddressSanitizer + UndefinedBehaviorSanitizer, warnings fatal; the CUDA
# kernels compiled with nvcc when the toolkit is present), and runs every test
# with ctest: unit tests, fixture parity with PyTorch, MPI tests under
# mpiexec -n 2, end-to-end runs of the programs (a local SLURM cluster among them); then
# builds the libFuzzer targets with clang (build-fuzz) and fuzzes each for 45 s.
#   tools/test.sh [ctest arguments, e.g. -R fixture]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
cmake -S . -B build-test -DFLOWDP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
cmake --build build-test -j"$(nproc)"
ctest --test-dir build-test --output-on-failure --timeout 900 "$@"

# the libFuzzer targets (tests/fuzz: config, IDX, CIFAR-10, checkpoint loaders): a
# separate clang build, each target fuzzed for FLOWDP_FUZZ_SECONDS (default 45) over
# its committed corpus; a crash, sanitizer report or leak fails
echo "test.sh: fuzzing (tests/fuzz, clang build in build-fuzz)"
CC=clang cmake -S . -B build-fuzz -DFLOWDP_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
  -DFLOWDP_FUZZ_SECONDS="${FLOWDP_FUZZ_SECONDS:-45}" >/dev/null
cmake --build build-fuzz -j"$(nproc)"
ctest --test-dir build-fuzz --output-on-failure "$@"
