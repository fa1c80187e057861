#!/usr/bin/env bash
# The longer transfer and ablation tables of docs/probes.md, from scratch: trains the two zfnet-small models the
# doc probes, then runs every probe and ablation the doc shows, with the convscope CLI only.
#   bash bench/tooling/probe-tables.sh [OUT]      (default OUT: convscope-out/probe-tables; 16 minutes on 2 cores)
# Each step's folder holds its table (probe.md / ablation.md); OUT/tables.md gathers them with each step's time.
# Steps already finished (their table exists) are skipped, so a killed run continues where it stopped.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:-convscope-out/probe-tables}
mkdir -p "$OUT"
npm run -s build
cs() { node bin/convscope.js "$@"; }
TABLES="$OUT/tables.md"
: > "$TABLES"

# step NAME TABLE_FILE ARGS...: runs `convscope ARGS` unless NAME/TABLE_FILE exists, then appends the table.
step() {
  local name=$1 table=$2; shift 2
  local start=$SECONDS
  if [ ! -f "$OUT/$name/$table" ]; then
    echo "== $name: convscope $*" >&2
    cs "$@"
    echo "$(( SECONDS - start )) s" > "$OUT/$name.seconds"
  fi
  { echo "### $name ($(cat "$OUT/$name.seconds"))"; echo; echo '```'; echo "convscope $*"; echo '```'; echo;
    cat "$OUT/$name/$table"; echo; } >> "$TABLES"
}

# The two models: all ten shape classes, and classes 0-5 only (6-9 never seen), the trainer's defaults.
train() {
  local name=$1 data=$2 epochs=$3
  if [ ! -f "$OUT/$name/model.safetensors" ]; then
    local start=$SECONDS
    echo "== $name: train --data $data --epochs $epochs" >&2
    cs train --model zfnet-small --data "$data" --epochs "$epochs" --snapshot-epochs "$epochs" --out "$OUT/$name" --resume
    echo "$(( SECONDS - start )) s" > "$OUT/$name.seconds"
  fi
  echo "- $name: \`convscope train --model zfnet-small --data $data --epochs $epochs\` ($(cat "$OUT/$name.seconds")); $(tail -n 1 "$OUT/$name/log.jsonl")" >> "$TABLES"
}
echo "## Models" >> "$TABLES"; echo >> "$TABLES"
train model-all shapes 10
train model-0-5 shapes:classes=0-5 12
echo >> "$TABLES"; echo "## Tables" >> "$TABLES"; echo >> "$TABLES"

A=$OUT/model-all/model.safetensors
B=$OUT/model-0-5/model.safetensors
step probe-heldout probe.md probe --model "$B" --train shapes:classes=6-9 --test shapes:classes=6-9 \
  --per-class 15,30 --splits 5 --baseline --out "$OUT/probe-heldout"
step probe-trained-classes probe.md probe --model "$B" --train shapes:classes=0-5 --test shapes:classes=0-5 \
  --per-class 15,30 --splits 5 --baseline --out "$OUT/probe-trained-classes"
step probe-seen-6-9 probe.md probe --model "$A" --train shapes:classes=6-9 --test shapes:classes=6-9 \
  --per-class 15,30 --splits 5 --out "$OUT/probe-seen-6-9"
step probe-fashion-mnist probe.md probe --model "$A" --train fashion-mnist --test fashion-mnist \
  --max-test 2000 --per-class 15,30 --splits 5 --baseline --out "$OUT/probe-fashion-mnist"
for l2 in 0.01 1 10; do
  step "probe-l2-$l2" probe.md probe --model "$B" --train shapes:classes=6-9 --test shapes:split=val,classes=6-9 \
    --per-class 15,30 --splits 3 --l2 "$l2" --out "$OUT/probe-l2-$l2"
done
step ablate-3ep ablation.md ablate --model "$A" --data shapes \
  --remove fc7/fc6,fc7/conv3,conv4/conv3,conv4,fc6,fc7 --epochs 3 --schedule manual:3=0.001 --out "$OUT/ablate-3ep"
echo "wrote $TABLES" >&2
