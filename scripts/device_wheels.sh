#!/usr/bin/env bash
# Wheels for a lent GPU machine whose image has torch, lightning, timm, numpy, scipy, matplotlib and
# pillow but not lic's other dependencies (the machine reaches no package index). Fills .whl/
# (git-ignored); a device command then starts with
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl \
#     && export PYTHONPATH=/tmp/site:$PWD
# Usage: bash scripts/device_wheels.sh [PYTHON_VERSION]   (default 3.12, the device image's)
set -euo pipefail
cd "$(dirname "$0")/.."
py=${1:-3.12}
mkdir -p .whl
platforms=()
for n in 17 27 28 34; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64)
pip_download() {
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
    "${platforms[@]}" -d .whl "$@"
}
pip_download compressai==1.2.8 hydra-core==1.3.2 omegaconf==2.3.0 pytorch-msssim==1.0.0 \
  tensorboardX==2.6.2.2 torch-geometric==2.6.1
# antlr4-python3-runtime 4.9.3 (omegaconf's parser) is only a source release: build its wheel here.
if ! ls .whl/antlr4_python3_runtime-4.9.3-*.whl >/dev/null 2>&1; then
  python3 -m pip wheel --quiet --no-deps -w .whl antlr4-python3-runtime==4.9.3
fi
ls -la .whl
