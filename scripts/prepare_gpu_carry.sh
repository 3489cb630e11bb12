#!/usr/bin/env bash
# Builds .gpu/, what a device-tool lease carries (run's carry=[".gpu"]): the wheels the
# device machine lacks (ml_collections, tensorboardX; pure Python, taken from PyPI here) and
# copies of the JPEG CIFAR-10 and MNIST from ../shared/data (~30 MB in all; the shared
# folder does not travel). .gpu/ is git-ignored; a fresh machine
# needs this once before the lease:
#   bash scripts/prepare_gpu_carry.sh
# then, on the lease (see scripts/gpu_edge_popup_queue.py):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
set -euo pipefail
cd "$(dirname "$0")/.."
data=${SHARED_DATA:-../shared/data}
for d in cifar10_jpeg mnist; do
  if [ ! -d "$data/$d" ]; then
    echo "prepare_gpu_carry: no $data/$d (set SHARED_DATA to the shared data folder)" >&2
    exit 1
  fi
done
mkdir -p .gpu/whl .gpu/data
python -m pip download -q --no-deps --only-binary=:all: -d .gpu/whl ml_collections tensorboardX
rm -rf .gpu/data/cifar10_jpeg .gpu/data/mnist
cp -r "$data/cifar10_jpeg" "$data/mnist" .gpu/data/
ls .gpu/whl
du -sh .gpu
