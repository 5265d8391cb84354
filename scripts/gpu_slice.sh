#!/usr/bin/env bash
# One GPU command of the training campaign, run on the device machine from the repository root:
#   device run, carry [".whl", ".gpu-data"], command: OUT=$OUT bash scripts/gpu_slice.sh
# Prepare here first: bash scripts/device_wheels.sh && python scripts/campaign.py gpu-pack
# ONLY (run names, space-separated) and BUDGET_MB (state budget) pass on to `campaign.py run`.
# It installs lic's missing dependencies from .whl/ (when they do not import already), continues
# the campaign on the GPU for MINUTES (default 9), and writes the whole campaign state as
# $OUT/state.tar.aa, .ab, ... (15 MiB pieces: a device command returns files of at most 16 MiB).
# Back here: python scripts/campaign.py gpu-merge <files_at>   (takes the runs that got further)
# On CPU (the proof that this path works before a GPU is there):
#   PYTHON=.venv/bin/python DEVICE=cpu MINUTES=2 OUT=/tmp/out bash scripts/gpu_slice.sh
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
if ! "$python" -c "import lic, compressai, omegaconf, hydra, pytorch_msssim" 2>/dev/null; then
  "$python" -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
export PYTHONUNBUFFERED=1
state=${STATE:-campaign}
"$python" scripts/campaign.py --shared "${SHARED:-.gpu-data}" --state-dir "$state" \
  run --minutes "${MINUTES:-9}" --device "${DEVICE:-cuda}" --margin "${MARGIN:-75}" \
  ${BUDGET_MB:+--state-budget-mb "$BUDGET_MB"} ${ONLY:+--only $ONLY}
mkdir -p "$OUT"
tar -C "$state" -cf - . | split -b 15m - "$OUT/state.tar."
ls -l "$OUT"
