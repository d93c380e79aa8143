#!/usr/bin/env bash
# One device call (device tool, H200), from the repository root:
#   bash benchmarks/gpu/run_all.sh            -> $OUT/results.tgz + a summary printed last
# build; quality training (TNL vs Transformer, 45M) beside the CUDA op tests; then, alone on the
# GPU, the training-speed sweep, the generation benchmark and (time left) the fwd+bwd kernel table.
# Each phase has its own timeout so the whole stays inside one 600 s call.
set -uo pipefail
OUT=${OUT:-/tmp/out}
R=$OUT/r
mkdir -p "$R"
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$R/gpu.txt"
MAX_JOBS=16 python3 setup.py build_ext --inplace > "$R/build.log" 2>&1 || { tail -40 "$R/build.log"; exit 1; }
stamp "built"
if [ -d .peers ]; then
  python3 -m pip install -q --no-deps --no-index --target /tmp/peers .peers/*.whl > "$R/peers.log" 2>&1
  mv /tmp/peers/lightning_attn /tmp/peers/official_lightning_attn 2>/dev/null
fi

if [ "${QUALITY:-1}" = 1 ]; then
  # Quality and tests share the GPU: neither is timed.
  ( MINUTES=${QUALITY_MINUTES:-1.5} STEPS=${QUALITY_STEPS:-} EVAL_EVERY=${QUALITY_EVAL_EVERY:-100} timeout ${QUALITY_TIMEOUT:-250} bash benchmarks/run_quality.sh "$R/quality" > "$R/quality.log" 2>&1
    echo "quality rc=$?" >> "$R/quality.log"; rm -rf "$R"/quality/*/checkpoint* ) &
  QPID=$!
  [ "${TESTS:-1}" = 1 ] && timeout ${TEST_TIMEOUT:-150} python3 -m pytest -q -rf tests/test_lightning_attn.py tests/test_lightning_attn_api.py \
    tests/test_srms_norm.py tests/test_model.py -k cuda > "$R/tests_cuda.log" 2>&1
  stamp "tests rc=$? $(tail -1 "$R/tests_cuda.log")"
  wait $QPID
  stamp "quality: $(grep -E 'rc=' "$R/quality.log")"
fi
if [ "${SPEED:-1}" = 1 ]; then
  timeout ${SPEED_TIMEOUT:-150} python3 benchmarks/bench_training_speed.py --preset 385M --tokens-per-step 65536 \
    --max-seconds ${SPEED_SECONDS:-125} --out "$R${SPEED_SUBDIR:-}" ${SPEED_EXTRA:-} > "$R/training_speed${SPEED_SUBDIR:+_${SPEED_SUBDIR#/}}.log" 2>&1
  stamp "training speed rc=$?"
  timeout ${GEN_TIMEOUT:-60} python3 benchmarks/bench_generation.py --preset 385M --batch-sizes 1,16 --prompt-len 512 \
    --new-tokens 1024 --mem-lengths 128,512 --max-seconds ${GEN_SECONDS:-45} --out "$R${GEN_SUBDIR:-}" ${GEN_EXTRA:-} \
    > "$R/generation${GEN_SUBDIR:+_${GEN_SUBDIR#/}}.log" 2>&1
  stamp "generation rc=$?"
fi
if [ "${KERNELS:-0}" = 1 ]; then
  timeout ${KERNEL_TIMEOUT:-150} python3 benchmarks/bench_kernels.py --modes fwd+bwd --main-table-only \
    --Ts ${KERNEL_TS:-1024 4096 16384 65536} --name kernels_fwdbwd --peers /tmp/peers --out "$R" > "$R/kernels_fwdbwd.log" 2>&1
  stamp "kernels fwd+bwd rc=$?"
fi
tar czf "$OUT/results.tgz" -C "$R" .
echo "==== summary"
for f in "$R"/tests_cuda.log "$R"/quality.log "$R"/training_speed*.log "$R"/generation*.log "$R"/kernels_fwdbwd.log; do
  [ -f "$f" ] && { echo "--- $(basename "$f")"; grep -vE "Warning|warn\(" "$f" | tail -${TAIL:-14}; }
done
