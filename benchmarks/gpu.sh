#!/usr/bin/env bash
# One call on a lent GPU machine: make the environment benchmarks/gpu.py needs, then run it.
#
# The GPU image has torch, timm, typer, rich, pyyaml, safetensors and scikit-learn but not Hugging Face
# `datasets` (and two of its needs), and it cannot reach a package registry. Download those wheels here
# first (`bash benchmarks/gpu_wheels.sh`, into .whl/, which git ignores) and carry .whl with the call:
#   run(command="bash benchmarks/gpu.sh --json-out $OUT/gpu.json", carry=[".whl"], timeout_s=600)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import datasets" 2>/dev/null; then
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/vit-site .whl/*.whl
    export PYTHONPATH="/tmp/vit-site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "error: Hugging Face datasets is not installed and .whl/ holds no wheels; run benchmarks/gpu_wheels.sh" >&2
    exit 2
  fi
fi
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE
exec "$PY" benchmarks/gpu.py "$@"
