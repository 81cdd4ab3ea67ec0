#!/usr/bin/env bash
# EAT-NAS on 2 CPU cores: source search on the small task, retraining of its top networks (the best
# is the basic model), elastic transfer to the target task, and the from-scratch baseline with the
# same budget and seed; the report draws transfer and scratch per cycle on one plot.
#   bash examples/eatnas/quick.sh          (PORT=8090 by default)
# The small task is digits limited to 600 training images, the target the whole digits training
# split (Fashion-MNIST, the issue's target, is not available offline here; set the transfer and
# scratch configs' dataset to fashion_mnist where it is).
set -euo pipefail
cd "$(dirname "$0")/../.."
[ -f .venv/bin/activate ] && . .venv/bin/activate
PORT=${PORT:-8090}
OUT=$(mktemp -d)
T0=$(date +%s)
echo "== stage 1: source search on digits (600 training images)"
nni-xfer run examples/eatnas/quick_digits.yml --port "$PORT" --id-file "$OUT/source.id"
SRC=$(cat "$OUT/source.id")
echo "== retraining: the top 2 of the best-quality population, 4 more epochs on the whole training split"
# (paper: top-8, 630 epochs from fresh weights; --from-search keeps this demo short)
nni-xfer eatnas retrain "$SRC" --search-config examples/eatnas/quick_digits.yml --top-k 2 --epochs 4 \
    --from-search -o "$OUT/retrain.yml"
nni-xfer run "$OUT/retrain.yml" --port "$PORT" --id-file "$OUT/retrain.id"
RT=$(cat "$OUT/retrain.id")
python - "$RT" "$OUT/transfer.yml" <<'PY'
import sys, yaml
cfg = yaml.safe_load(open('examples/eatnas/transfer_digits.yml'))
cfg['tuner']['classArgs']['strategy_args']['seed_from'] = {'experiment': sys.argv[1]}
yaml.safe_dump(cfg, open(sys.argv[2], 'w'), sort_keys=False)
PY
echo "== stage 2: elastic transfer to the whole digits training set, seeded from $RT (basic model)"
nni-xfer run "$OUT/transfer.yml" --port "$PORT" --id-file "$OUT/transfer.id"
TR=$(cat "$OUT/transfer.id")
echo "== baseline: the same search from scratch"
nni-xfer run examples/eatnas/scratch_digits.yml --port "$PORT" --id-file "$OUT/scratch.id"
SC=$(cat "$OUT/scratch.id")
echo "== report: transfer vs scratch per cycle"
nni-xfer report "$TR" | sed -n '/EAT-NAS population/,$p'
echo "source $SRC, retraining $RT, transfer $TR, scratch $SC ($(( $(date +%s) - T0 ))s)"
echo "plots: nni-xfer-report/$TR/eatnas_cycles.png (transfer and scratch), nni-xfer-report/<id>/ for each"
