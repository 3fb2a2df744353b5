#!/usr/bin/env bash
# install_deps.sh — installs the Debian packages flowdp needs that are missing
# (and nothing else). Runs apt-get as root, or through sudo. Idempotent: a
# machine that has everything is left alone without touching the network.
#   tools/install_deps.sh            build + run + test dependencies
#   tools/install_deps.sh --dry-run  only list what is missing
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git       # toolchain
  libopenmpi-dev openmpi-bin                 # MPI (data parallel on CPU; bootstrap of NCCL)
  libhdf5-dev hdf5-tools                     # checkpoints, metrics, fixtures; h5dump
  libdnnl-dev                                # oneDNN: CPU convolutions
  libcmocka-dev                              # unit tests
  libpng-dev zlib1g-dev libinih-dev          # sample grids, gzip IDX, INI configs
  libzip-dev libjpeg-dev                     # flowdp-pack: ImageNet .npz archives, JPEG folders
  dataset-fashion-mnist                      # the real data of the quickstart and the tests
  clang slurm-wlm munge                      # fault tests: libFuzzer targets (clang), e2e_slurm's private cluster
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install_deps: all ${#PKGS[@]} packages present"
  exit 0
fi
echo "install_deps: missing: ${missing[*]}"
if [ "${1:-}" = "--dry-run" ]; then exit 0; fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install_deps: not root and no sudo; install as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install_deps: installed ${missing[*]}"
