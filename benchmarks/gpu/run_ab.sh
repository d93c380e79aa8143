#!/usr/bin/env bash
# Runs on the GPU machine: A/B of two builds in one session. A = the tree in $AB_OLD (for example
# `git archive <rev> setup.py pyproject.toml csrc lightning_attn | tar -x -C _ab_old`), B = this
# tree. Builds both, then times them alternately (A B A B) with benchmarks/gpu/ab_time.py;
# lines go to $OUT/ab.jsonl, and the table of medians per shape (B / A) is printed last.
set -uo pipefail
OUT=${OUT:-/tmp/out}
AB_OLD=${AB_OLD:-_ab_old}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
(cd "$AB_OLD" && MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build_a.log" 2>&1) || { tail -30 "$OUT/build_a.log"; exit 1; }
MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build_b.log" 2>&1 || { tail -30 "$OUT/build_b.log"; exit 1; }
for round in 1 2; do
  PYTHONPATH=$PWD/$AB_OLD timeout 120 python3 benchmarks/gpu/ab_time.py --tag A --out "$OUT/ab.jsonl" > /dev/null
  PYTHONPATH=$PWD timeout 120 python3 benchmarks/gpu/ab_time.py --tag B --out "$OUT/ab.jsonl" > /dev/null
done
python3 - "$OUT/ab.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print(f"{'shape':22} {'fwd A':>7} {'fwd B':>7} {'B/A':>5}   {'f+b A':>7} {'f+b B':>7} {'B/A':>5}")
for key in rows[0]["ms"]:
    med = {t: {m: statistics.median(r["ms"][key][m] for r in rows if r["tag"] == t) for m in ("fwd", "fwdbwd")}
           for t in ("A", "B")}
    print(f"{key:22} {med['A']['fwd']:7.3f} {med['B']['fwd']:7.3f} {med['B']['fwd'] / med['A']['fwd']:5.2f}   "
          f"{med['A']['fwdbwd']:7.3f} {med['B']['fwdbwd']:7.3f} {med['B']['fwdbwd'] / med['A']['fwdbwd']:5.2f}")
EOF
