#!/usr/bin/env bash
# EAT-NAS on 2 CPU cores: source search on the small task, retraining of its top networks (the best
# is the basic model), elastic transfer to the target task, and the from-scratch baseline with the
# same budget and seed; the report draws transfer and scratch per cycle on one plot.
#   bash examples/eatnas/quick.sh          (PORT=8090 by default)
# The small task is digits limited to 600 training images, the target the whole digits training
# split: that keeps the four stages near 15 minutes on 2 CPU cores. TARGET=fashion_mnist (Debian's
# dataset-fashion-mnist, or dataset_args.download) transfers to Fashion-MNIST instead, as the issue
# describes — 2,000 training and 1,000 validation images at 28x28 with a stride-2 stem; measured one
# trial of the basic model there at 68 s vs 18 s on whole digits (same run, 2 CPUs), so expect
# the transfer and scratch stages to take about 3-4x longer.
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
TARGET=${TARGET:-digits}
python - "$RT" "$OUT" "$TARGET" <<'PY'
import sys, yaml
rt, out, target = sys.argv[1:]
for name in ('transfer', 'scratch'):
    cfg = yaml.safe_load(open(f'examples/eatnas/{name}_digits.yml'))
    args = cfg['tuner']['classArgs']
    if name == 'transfer':
        args['strategy_args']['seed_from'] = {'experiment': rt}
    if target == 'fashion_mnist':
        cfg['experimentName'] = cfg['experimentName'].replace('(digits', '(fashion_mnist')
        args['dataset'] = 'fashion_mnist'
        args['dataset_args'] = {'val_size': 1000, 'limit_train': 2000}
        args['space_args'] = {**args['space_args'], 'stem_stride': 2}
    elif target != 'digits':
        sys.exit(f'TARGET: {target!r} is not one of digits, fashion_mnist')
    yaml.safe_dump(cfg, open(f'{out}/{name}.yml', 'w'), sort_keys=False)
PY
echo "== stage 2: elastic transfer to the target task ($TARGET), seeded from $RT (basic model)"
nni-xfer run "$OUT/transfer.yml" --port "$PORT" --id-file "$OUT/transfer.id"
TR=$(cat "$OUT/transfer.id")
echo "== baseline: the same search from scratch"
nni-xfer run "$OUT/scratch.yml" --port "$PORT" --id-file "$OUT/scratch.id"
SC=$(cat "$OUT/scratch.id")
echo "== report: transfer vs scratch per cycle"
nni-xfer report "$TR" | sed -n '/EAT-NAS population/,$p'
echo "source $SRC, retraining $RT, transfer $TR, scratch $SC ($(( $(date +%s) - T0 ))s)"
echo "plots: nni-xfer-report/$TR/eatnas_cycles.png (transfer and scratch), nni-xfer-report/<id>/ for each"
