#!/usr/bin/env bash
# Runs on the GPU machine: A/B(/C...) of several builds in one session. AB_DIRS lists the trees,
# tagged A, B, C, ... in order (default "_ab_old .": A = the tree in _ab_old, for example
# `git archive <rev> setup.py pyproject.toml csrc lightning_attn | tar -x -C _ab_old`, B = this
# tree). Builds each, then times them alternately (A B A B ...) with benchmarks/gpu/ab_time.py;
# lines go to $OUT/ab.jsonl, and the table of medians per shape (each tag / A) is printed last.
set -uo pipefail
OUT=${OUT:-/tmp/out}
read -r -a DIRS <<< "${AB_DIRS:-_ab_old .}"
TAGS=(A B C D E F)
[ ${#DIRS[@]} -le ${#TAGS[@]} ] || { echo "AB_DIRS: at most ${#TAGS[@]} trees, got ${#DIRS[@]}"; exit 2; }
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
for i in "${!DIRS[@]}"; do
  (cd "${DIRS[$i]}" && MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build_${TAGS[$i]}.log" 2>&1) ||
    { tail -30 "$OUT/build_${TAGS[$i]}.log"; exit 1; }
done
for round in $(seq "${AB_ROUNDS:-2}"); do
  for i in "${!DIRS[@]}"; do
    PYTHONPATH=$(cd "${DIRS[$i]}" && pwd) timeout 120 python3 benchmarks/gpu/ab_time.py --tag "${TAGS[$i]}" \
      --out "$OUT/ab.jsonl" > /dev/null
  done
done
python3 - "$OUT/ab.jsonl" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tags = sorted({r["tag"] for r in rows})
med = {t: {key: {m: statistics.median(r["ms"][key][m] for r in rows if r["tag"] == t) for m in ("fwd", "fwdbwd")}
           for key in rows[0]["ms"]} for t in tags}
print(f"{'shape':20} " + " ".join(f"{'fwd ' + t:>7}" for t in tags) + "   " + " ".join(f"{'f+b ' + t:>7}" for t in tags)
      + "   " + " ".join(f"{t + '/A':>5} {'fb':>4}" for t in tags[1:]))
for key in rows[0]["ms"]:
    m = {t: med[t][key] for t in tags}
    print(f"{key:20} " + " ".join(f"{m[t]['fwd']:7.3f}" for t in tags) + "   " +
          " ".join(f"{m[t]['fwdbwd']:7.3f}" for t in tags) + "   " +
          " ".join(f"{m[t]['fwd'] / m['A']['fwd']:5.2f} {m[t]['fwdbwd'] / m['A']['fwdbwd']:4.2f}" for t in tags[1:]))
PY
