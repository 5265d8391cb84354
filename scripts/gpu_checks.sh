#!/usr/bin/env bash
# The GPU checks (scripts/gpu_checks.py) on a lent device machine, from the repository root:
#   device run, carry [".whl", "datasets/kodak"], timeout_s 600,
#   command: OUT=$OUT bash scripts/gpu_checks.sh
# Prepare here first: bash scripts/device_wheels.sh && python scripts/gpu_checks.py --prepare
# It installs lic's missing dependencies from .whl/ (when they do not import already), runs the
# checks without `make install` (PYTHONPATH) and writes $OUT/gpu-checks/gpu-checks.{json,md} and
# cuda-tests.log. Extra arguments go to gpu_checks.py. On CPU (the proof that this path works):
#   PYTHON=.venv/bin/python OUT=/tmp/out bash scripts/gpu_checks.sh --limit 1 --steps 2 --sizes tiny
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
imports="import lic, compressai, omegaconf, hydra, pytorch_msssim, tensorboardX"
if ! "$python" -c "$imports" 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site \
    .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
export PYTHONUNBUFFERED=1
"$python" scripts/gpu_checks.py -o "$OUT/gpu-checks" "$@"
