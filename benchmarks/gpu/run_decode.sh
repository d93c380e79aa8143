#!/usr/bin/env bash
# Decode kernel check on the GPU machine: build, CUDA tests, decode tests of the model,
# the decoding table beside FLA (decode.json under $OUT), compute-sanitizer.
#   bash benchmarks/gpu/run_decode.sh   (carry .peers)
set -uo pipefail
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
MAX_JOBS=16 python3 setup.py build_ext --inplace > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
python3 -m pip install -q --no-deps --no-index --target /tmp/peers .peers/*.whl > $OUT/peers.log 2>&1
mv /tmp/peers/lightning_attn /tmp/peers/official_lightning_attn 2>/dev/null
python3 -m pytest -q -x tests/test_cuda_kernels.py 2>&1 | tail -3
python3 -m pytest -q tests/test_model.py tests/test_lightning_attn.py -k "decode or generat" 2>&1 | tail -3
timeout 200 python3 benchmarks/bench_kernels.py --decode-only --name decode --peers /tmp/peers --out $OUT 2>&1 | tail -8
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 100 compute-sanitizer --tool memcheck --error-exitcode 9 python3 benchmarks/gpu/sanitize_small.py > $OUT/san.log 2>&1; echo "memcheck rc=$? $(grep 'ERROR SUMMARY' $OUT/san.log)"
PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout 100 compute-sanitizer --tool racecheck --error-exitcode 9 python3 benchmarks/gpu/sanitize_small.py > $OUT/san2.log 2>&1; echo "racecheck rc=$? $(grep 'RACECHECK SUMMARY' $OUT/san2.log)"
