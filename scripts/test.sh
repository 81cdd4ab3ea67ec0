#!/usr/bin/env bash
# Set up, then run the whole test suite (unit, contract, real nnictl integration, remote if sshd exists).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
python -m pytest -q "$@"
