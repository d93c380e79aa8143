#!/usr/bin/env bash
# Runs on the GPU machine (device tool), from the repository root:
#   bash benchmarks/gpu/run_kernels.sh [quick|full|peers]
# builds the extension, runs the CUDA tests, compute-sanitizer on small calls, and the
# kernel benchmark; logs and results go to $OUT (or /tmp/out).
set -uo pipefail
MODE=${1:-quick}
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee "$OUT/gpu.txt"
# the wgmma operand forms of the Hopper kernel on their own (seconds; says which form is wrong)
nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -Icsrc benchmarks/gpu/wgmma_probe.cu \
  -o /tmp/wgmma_probe > "$OUT/wgmma_probe_build.log" 2>&1 && /tmp/wgmma_probe | tee "$OUT/wgmma_probe.log"
t0=$(date +%s)
MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
echo "build: $(( $(date +%s) - t0 )) s"
grep -E "spill|registers" "$OUT/build.log" | sort | uniq -c | head -20
if [ -d .peers ] && [ "$MODE" != quick ]; then
  python3 -m pip install -q --no-deps --no-index --target /tmp/peers .peers/*.whl > "$OUT/peers.log" 2>&1
  mv /tmp/peers/lightning_attn /tmp/peers/official_lightning_attn 2>/dev/null
  ls /tmp/peers
fi
# the Hopper kernels by part against float64, then beside the portable ones in one process
[ "${CHECK:-1}" = 1 ] && timeout ${CHECK_TIMEOUT:-240} python3 benchmarks/gpu/sm90_check.py --out "$OUT" 2>&1 | tee "$OUT/sm90_check.log"
if [ "${TESTS:-1}" = 1 ]; then
t0=$(date +%s)
python3 -m pytest -q --maxfail=25 -rf tests/test_cuda_kernels.py ${PYTEST_ARGS:-} 2>&1 | tee "$OUT/tests.log" | tail -25
echo "tests: $(( $(date +%s) - t0 )) s"
python3 benchmarks/gpu/accuracy.py 2>&1 | tee "$OUT/accuracy.log"
fi
if [ "${SANITIZE:-1}" = 1 ]; then
  t0=$(date +%s)
  for tool in memcheck racecheck; do
    SANITIZE_ROWS=$([ $tool = memcheck ] && echo 1 || echo 0) PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout ${SAN_TIMEOUT:-150} compute-sanitizer --tool $tool --error-exitcode 9 \
      python3 benchmarks/gpu/sanitize_small.py > "$OUT/sanitizer_$tool.log" 2>&1
    echo "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1)"
  done
  echo "sanitizer: $(( $(date +%s) - t0 )) s"
fi
[ "${BENCH:-1}" = 1 ] || exit 0
t0=$(date +%s)
if [ "$MODE" = peers ]; then
  # the fwd+bwd table beside the peers (fla chunk_simple_gla, official lightning_attn2)
  timeout ${PEER_TIMEOUT:-200} python3 benchmarks/bench_kernels.py --modes fwd+bwd --main-table-only \
    --Ts ${PEER_TS:-1024 4096 16384 65536} --name kernels_fwdbwd --peers /tmp/peers --out "$OUT" > "$OUT/kernels_fwdbwd.log" 2>&1
  echo "fwd+bwd with peers rc=$?"; grep -A12 "^mode" "$OUT/kernels_fwdbwd.log"
elif [ "$MODE" = full ]; then
  timeout ${BENCH_TIMEOUT:-400} python3 benchmarks/bench_kernels.py --peers /tmp/peers --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -60
  [ -f "$OUT/kernels.png" ] || python3 benchmarks/bench_kernels.py --plot-only --out "$OUT"
else
  python3 benchmarks/bench_kernels.py --quick --out "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -30
fi
echo "bench: $(( $(date +%s) - t0 )) s"
