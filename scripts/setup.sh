#!/usr/bin/env bash
# Create .venv and install nni-xfer with everything it needs (torch, NNI 3.0, setuptools<81, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip 'setuptools<81' wheel
python -c 'import torch, torchvision' 2>/dev/null || python -m pip install -q torch==2.14.1 torchvision==0.29.1
python -m pip install -q -e '.[test]'
echo "nni-xfer installed in $(pwd)/.venv"
