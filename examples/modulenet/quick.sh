#!/usr/bin/env bash
# ModuleNet end to end on `digits` with 2 CPU cores (about 12 minutes; measured 709 s):
#   1. knowledge base: train 4 small ResNets/VGGs, cut each into 5 modules that keep their weights
#   2. NSGA-II search over module chains through nnictl (frozen modules, only the head trains)
#   3. fine-tune the top-3 searched chains (the paper fine-tunes the whole final population: drop
#      --top-k) and every original network, all weights trainable, each from its searched head
#   4. report: searched vs. originals on the test split
# Environment: PORT (default 8080); NNI_XFER_HOME (default ~/.nni-xfer) holds the knowledge base,
# the knowledge store and checkpoints; EPOCHS (fine-tuning epochs, default 15; paper: 50).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || bash scripts/setup.sh
  . .venv/bin/activate
fi
PORT="${PORT:-8080}"
OUT="${OUT:-runs/modulenet_quick}"
mkdir -p "$OUT"
t0=$(date +%s)
echo "== 1/4 knowledge base"
nni-xfer kb build examples/modulenet/kb_digits.yml
t1=$(date +%s)
echo "== 2/4 NSGA-II search"
nni-xfer run examples/modulenet/quick.yml --port "$PORT" --id-file "$OUT/search.id"
t2=$(date +%s)
SEARCH=$(cat "$OUT/search.id")
echo "== 3/4 fine-tune top-3 searched + originals"
nni-xfer modulenet finetune "$SEARCH" --search-config examples/modulenet/quick.yml --top-k 3 \
  --epochs "${EPOCHS:-15}" --lr 0.02 -o "$OUT/finetune.yml"
nni-xfer run "$OUT/finetune.yml" --port "$PORT" --id-file "$OUT/finetune.id"
t3=$(date +%s)
echo "== 4/4 report"
nni-xfer report "$(cat "$OUT/finetune.id")" -o "$OUT/report"
echo "time: knowledge base $((t1 - t0))s, search $((t2 - t1))s, fine-tune $((t3 - t2))s, total $((t3 - t0))s"
