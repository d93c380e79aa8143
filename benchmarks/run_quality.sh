#!/usr/bin/env bash
# Quality (issue 6, claim 2): TNL against the same-size Transformer baseline in the ~45M
# WikiText-103 setting, trained the same way with examples/train_tnl.py -- same data (the bundled
# head of the WikiText-103 train split; never valid/test), same number of tokens, same seeds, same
# optimiser and schedule -- then perplexity on the whole WikiText-103 valid AND test splits
# (benchmarks/eval_ppl.py) and both loss curves in one PNG (benchmarks/plot_paper_claims.py).
#
#   bash benchmarks/run_quality.sh [OUTDIR]           (default OUTDIR: runs/quality)
#
# Equal tokens: the first model (TNL) fits its cosine schedule into MINUTES (train_tnl.py's
# --max-minutes); the second runs exactly as many steps with the same warm-up (its own time cap
# is CAP_FACTOR x MINUTES; if it had to cut its schedule, check and the table say so).
# Set STEPS to fix the number of steps of both instead.
#
# Knobs (environment): MINUTES (per model, default 3; the 7-minute H200 plan uses 1), STEPS, PRESET (wikitext-45M), BATCH (32
# sequences of the preset's 512 tokens), LR (1e-3), DROPOUT (0.1), WARMUP (20), SEED (1234),
# DATA_SEED (0), EVAL_EVERY (100 steps), EVAL_TOKENS (65536 valid tokens for the curve; the final
# numbers use the whole splits), DEVICE (cuda if present), CAP_FACTOR (3), EXTRA (more flags for
# both runs, e.g. "--no-compile --threads 2"), EVAL_EXTRA (flags for eval_ppl.py).
#
# CPU smoke test (seconds, not a result):
#   PRESET=cpu-tiny BATCH=4 STEPS=6 EVAL_EVERY=3 EVAL_TOKENS=2048 DEVICE=cpu EXTRA="--threads 2" \
#     EVAL_EXTRA="--max-tokens 4096" bash benchmarks/run_quality.sh /tmp/quality
set -euo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:-runs/quality}
MINUTES=${MINUTES:-3}
STEPS=${STEPS:-}
PRESET=${PRESET:-wikitext-45M}
BATCH=${BATCH:-32}
LR=${LR:-1e-3}
DROPOUT=${DROPOUT:-0.1}
WARMUP=${WARMUP:-20}
SEED=${SEED:-1234}
DATA_SEED=${DATA_SEED:-0}
EVAL_EVERY=${EVAL_EVERY:-100}
EVAL_TOKENS=${EVAL_TOKENS:-65536}
CAP_FACTOR=${CAP_FACTOR:-3}
DEVICE=${DEVICE:-$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")}
EXTRA=${EXTRA:-}
EVAL_EXTRA=${EVAL_EXTRA:-}
export PYTHONUNBUFFERED=1
mkdir -p "$OUTDIR"
LOG="$OUTDIR/commands.txt"
: > "$LOG"
t_all=$(date +%s)

common=(--preset "$PRESET" --batch-size "$BATCH" --lr "$LR" --dropout "$DROPOUT" --seed "$SEED" --data-seed "$DATA_SEED"
        --data wikitext-103/wiki.train.head.tokens --valid wikitext-103/wiki.valid.tokens
        --eval-every "$EVAL_EVERY" --eval-tokens "$EVAL_TOKENS" --device "$DEVICE" --no-progress)
# shellcheck disable=SC2206
extra=($EXTRA)

run() {  # run ARCH OUT_SUBDIR FLAGS...
  local arch=$1 sub=$2; shift 2
  local cmd=(python3 examples/train_tnl.py --arch "$arch" "${common[@]}" "$@" "${extra[@]}" --out "$OUTDIR/$sub")
  echo "${cmd[*]}" | tee -a "$LOG"
  local t0; t0=$(date +%s)
  "${cmd[@]}" 2>&1 | tee "$OUTDIR/$sub.log" | { grep -vE "Warning|warn\(" || true; } | tail -8
  echo "$arch: $(( $(date +%s) - t0 )) s wall"
}

if [ -n "$STEPS" ]; then
  run tnl tnl --max-steps "$STEPS" --warmup "$WARMUP" --max-minutes "$(python3 -c "print($MINUTES * $CAP_FACTOR)")"
else
  run tnl tnl --max-steps 1000000 --warmup "$WARMUP" --max-minutes "$MINUTES"
fi
read -r S W < <(python3 -c "import json; s = json.load(open('$OUTDIR/tnl/summary.json')); print(s['steps'], s['args']['warmup'])")
echo "TNL ran $S steps (warm-up $W); the Transformer runs the same"
run transformer transformer --max-steps "$S" --warmup "$W" --max-minutes "$(python3 -c "print($MINUTES * $CAP_FACTOR)")"

# shellcheck disable=SC2206
eval_extra=($EVAL_EXTRA)
cmd=(python3 benchmarks/eval_ppl.py --runs "$OUTDIR/tnl" "$OUTDIR/transformer" --out "$OUTDIR" --device "$DEVICE" "${eval_extra[@]}")
echo "${cmd[*]}" | tee -a "$LOG"
"${cmd[@]}" 2>&1 | { grep -vE "Warning|warn\(" || true; }
python3 benchmarks/plot_paper_claims.py quality --runs "$OUTDIR/tnl" "$OUTDIR/transformer" --out "$OUTDIR"
python3 benchmarks/plot_paper_claims.py check --dir "$OUTDIR" --quality "$OUTDIR"
echo "quality: $(( $(date +%s) - t_all )) s wall in all; results in $OUTDIR (quality.json, quality_loss_curves.png, commands.txt)"
