#!/usr/bin/env bash
# Set up, then run the main job: a real random search on `digits` through nnictl (local).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
nni-xfer run examples/quickstart/exp.yml --port "${PORT:-8080}" "$@"
