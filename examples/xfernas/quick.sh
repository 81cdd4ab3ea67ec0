#!/usr/bin/env bash
# XferNAS quick run on 2 CPUs, real tasks of one family: source knowledge on Fashion-MNIST classes 0-4
# (8x8) and digits (8 random cells each), then the XferNAS target search on Fashion-MNIST classes 5-9
# (8x8; 9 cells), with a private knowledge store. Prints each trial, the report (phase 1 / phase 2 proposals) and its plots.
#   bash examples/xfernas/quick.sh            # PORT=8095 by default; NNI_XFER_HOME to keep the store
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
export NNI_XFER_HOME="${NNI_XFER_HOME:-$(mktemp -d /tmp/nni-xfer-xfernas-quick.XXXXXX)}"
PORT="${PORT:-8095}"
echo "knowledge store: $NNI_XFER_HOME/store.db"
nni-xfer xfernas sources examples/xfernas/sources_quick.yaml --port "$PORT" -o "$NNI_XFER_HOME/sources"
nni-xfer run examples/xfernas/quick.yml --port "$PORT" --id-file "$NNI_XFER_HOME/target_id"
echo "target experiment: $(cat "$NNI_XFER_HOME/target_id"); report: nni-xfer report $(cat "$NNI_XFER_HOME/target_id")"
