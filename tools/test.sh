#!/usr/bin/env bash
# test.sh — the test command: installs what is missing, builds the test build
# (AddressSanitizer + UndefinedBehaviorSanitizer, warnings fatal; the CUDA
# kernels compiled with nvcc when the toolkit is present), and runs every test
# with ctest (after tools/check_structure.py: file and function sizes, no two source
# files calling into each other): unit tests, fixture parity with PyTorch, MPI tests under
# mpiexec -n 2, end-to-end runs of the programs (a local SLURM cluster among them), the
# bad-input suite; then the bad-input suite again on the Release build (build/) and the
# trajectory check against tests/trajectory_base (tools/trajectory_check.sh); then
# builds the libFuzzer targets with clang (build-fuzz) and fuzzes each for 20 s.
#   tools/test.sh [ctest arguments, e.g. -R fixture]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
cmake -S . -B build-test -DFLOWDP_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
cmake --build build-test -j"$(nproc)"
# file and function sizes, and no two source files calling into each other (docs/ARCHITECTURE.md)
tools/check_structure.py build-test
ctest --test-dir build-test --output-on-failure --timeout 900 "$@"

# the bad-input suite (tests/bad_inputs) on the Release programs too: the same rows, since
# optimisation changes what uninitialised memory or a race would do (ctest above ran it on
# the sanitizer build). Skipped when ctest arguments select a subset.
if [ $# -eq 0 ]; then
  echo "test.sh: the bad-input suite on the Release build (build/)"
  cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build -j"$(nproc)" --target flowdp-train flowdp-eval flowdp-sample flowdp-pack flowdp-bench
  bash tests/bad_inputs/run.sh build .
  # trajectories unchanged since tests/trajectory_base: 50 steps of the quickstart RealNVP and
  # the tiny Glow on 2 ranks, bit-identical checkpoints (exit 77: skipped, with the reason)
  echo "test.sh: trajectories unchanged since tests/trajectory_base (tools/trajectory_check.sh)"
  tools/trajectory_check.sh --build build || [ $? -eq 77 ]
fi

# the libFuzzer targets (tests/fuzz: config and --set, IDX, CIFAR-10, checkpoint, .npy
# header, JPEG/PNG decoder, shard index and shard loaders): a separate clang build, each
# target fuzzed for FLOWDP_FUZZ_SECONDS (default 20) over
# its committed corpus; a crash, sanitizer report or leak fails
echo "test.sh: fuzzing (tests/fuzz, clang build in build-fuzz)"
CC=clang cmake -S . -B build-fuzz -DFLOWDP_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug \
  -DFLOWDP_FUZZ_SECONDS="${FLOWDP_FUZZ_SECONDS:-20}" >/dev/null
cmake --build build-fuzz -j"$(nproc)"
ctest --test-dir build-fuzz --output-on-failure "$@"
