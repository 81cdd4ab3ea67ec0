#!/usr/bin/env bash
# EAT-NAS on 2 CPU cores: source search on the small task, elastic transfer to the target task,
# and the from-scratch baseline with the same budget and seed.
#   bash examples/eatnas/quick.sh [--port P]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
PORT=${PORT:-8090}
OUT=$(mktemp -d)
echo "== stage 1: source search on digits (600 training images)"
nni-xfer run examples/eatnas/quick_digits.yml --port "$PORT" --id-file "$OUT/source.id"
SRC=$(cat "$OUT/source.id")
python - "$SRC" "$OUT/transfer.yml" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open('examples/eatnas/transfer_digits.yml'))
cfg['tuner']['classArgs']['strategy_args']['seed_from'] = {'experiment': sys.argv[1]}
yaml.safe_dump(cfg, open(sys.argv[2], 'w'), sort_keys=False)
PY
echo "== stage 2: elastic transfer to the whole digits training set, seeded from $SRC"
nni-xfer run "$OUT/transfer.yml" --port "$PORT" --id-file "$OUT/transfer.id"
echo "== baseline: the same search from scratch"
nni-xfer run examples/eatnas/scratch_digits.yml --port "$PORT" --id-file "$OUT/scratch.id"
echo "source $SRC, transfer $(cat "$OUT/transfer.id"), scratch $(cat "$OUT/scratch.id")"
echo "plots: nni-xfer-report/<experiment id>/ (nni-xfer report ID)"
