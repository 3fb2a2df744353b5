#!/usr/bin/env bash
# quickstart.sh — the main job: installs what is missing, builds flowdp
# (Release), trains the quickstart RealNVP on Fashion-MNIST with 2 MPI ranks,
# then writes the test-set bpd report (all 10000 test images, 2 ranks) and a
# grid of samples at temperatures 0.5, 0.7, 0.85 and 1.0.
# Everything lands in run/quickstart/: checkpoints, metrics.h5, report.json,
# report.txt and samples.png. Re-running continues from the newest checkpoint.
#   tools/quickstart.sh [extra flowdp-train arguments, e.g. --set train.steps=600]
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install_deps.sh
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build -j"$(nproc)" --target flowdp-train flowdp-eval flowdp-sample
RUN=run/quickstart
mkdir -p "$RUN"
MPI=(mpiexec -n 2 --oversubscribe --bind-to none)
"${MPI[@]}" build/flowdp-train --config configs/quickstart_fmnist.ini --resume auto "$@"
CKPT="$RUN/best.h5"
[ -f "$CKPT" ] || CKPT=$(ls "$RUN"/ckpt_*.h5 | tail -n 1)
"${MPI[@]}" build/flowdp-eval "$CKPT" --threads 1 --json "$RUN/report.json" | tee "$RUN/report.txt"
build/flowdp-sample "$CKPT" -n 10 -t 0.5 -t 0.7 -t 0.85 -t 1.0 --seed 1 -o "$RUN/samples.png"
echo "quickstart: done. Report: $RUN/report.txt  Samples: $RUN/samples.png  Metrics: $RUN/metrics.h5"
