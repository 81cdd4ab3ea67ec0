#!/usr/bin/env bash
# Create .venv and install nni-xfer with everything it needs (torch, NNI 3.0, setuptools<81, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 'setuptools<81' wheel
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu: CPU-only torch (PyPI's default wheel pulls ~15 CUDA packages)
python -c 'import torch, torchvision' 2>/dev/null || python -m pip install -q torch==2.14.1 torchvision==0.29.1 \
  ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
python -m pip install -q -e '.[test]'
echo "nni-xfer installed in $(pwd)/.venv"
