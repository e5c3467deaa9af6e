#!/usr/bin/env bash
# Download, on a machine with a package registry, the wheels benchmarks/gpu.sh installs on the GPU
# machine: Hugging Face datasets and the two of its requirements that the GPU image lacks (Python 3.12).
set -euo pipefail
cd "$(dirname "$0")/.."
exclude="$(git rev-parse --git-common-dir)/info/exclude"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d .whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19  # the versions the project is tested with
ls .whl
