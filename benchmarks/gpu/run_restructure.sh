#!/usr/bin/env bash
# One device call for a host-code change that must keep the kernels' results and speed: old main
# (the tree in _ab_old: `git archive <rev> setup.py pyproject.toml csrc lightning_attn | tar -x -C _ab_old`)
# against this tree. Builds both at once, checksums every output of bits_dump.py's calls under each
# and compares them, times both alternately (run_ab.sh), then runs the CUDA tests on this tree.
#   PHASES="bits ab tests" (default) | "check sanitize" (sm90_check --no-timing, compute-sanitizer)
#   | "arch80": a copy built for sm_80 only must refuse this GPU with the error naming the archs, and one
#     built for "80+PTX" must run on it (the driver compiles the PTX, as on a GPU newer than the build)
#   | "ckpt" (bench_prefill_checkpoints.py) | "edge" (tests/test_cuda_edge_cases.py) | "dtok" (bench_decode_tokens.py) | "gen" (bench_generation.py under A and B, TNL decode) | "serve" (bench_serving.py --check) | "diag" (diag_segv.py)
#   | "wheel" (the default-target wheel built, installed outside the checkout, smoke + CUDA tests against it)
#   | "prof" (profile_decode.py: where a compiled decode step's time goes, both models; PROF_ARGS: its
#     arguments instead, and no max-autotune run) ; TESTS: the pytest paths of "tests" (default tests)
# Both trees build for sm_90a only (LIGHTNING_ATTN_CUDA_ARCHS), the old tree's default.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
T0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - T0 )) s] $*"; }
export LIGHTNING_ATTN_CUDA_ARCHS=${LIGHTNING_ATTN_CUDA_ARCHS:-90a}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv > "$OUT/gpu.txt"
# The old tree only where a phase compares against it.
case " ${PHASES:-bits ab tests} " in
  *" bits "*|*" ab "*|*" gen "*|*" dtok "*) (cd _ab_old && MAX_JOBS=8 python3 setup.py build_ext --inplace > "$OUT/build_A.log" 2>&1) & PA=$! ;;
  *) (true) & PA=$! ;;
esac
MAX_JOBS=8 python3 setup.py build_ext --inplace > "$OUT/build_B.log" 2>&1; RB=$?
wait $PA; RA=$?
[ $RA = 0 ] && [ $RB = 0 ] || { tail -30 "$OUT/build_A.log" "$OUT/build_B.log"; exit 1; }
stamp "built; C++ standard of this tree's compiles: $(grep -o 'std=c++[0-9]*' "$OUT/build_B.log" | sort | uniq -c | tr '\n' ' ')"
case " ${PHASES:-} " in *" arch80 "*)
  # two copies: sm_80 SASS only (must refuse this GPU), and sm_80 SASS + PTX (the driver compiles
  # the PTX for this GPU: the portable kernels must run, as on a GPU newer than the build)
  for d in a80 a80ptx; do
    rm -rf /tmp/$d && mkdir -p /tmp/$d && cp -r setup.py pyproject.toml README.md csrc lightning_attn /tmp/$d/
    rm -f /tmp/$d/lightning_attn/*.so
  done
  (cd /tmp/a80 && LIGHTNING_ATTN_CUDA_ARCHS=80 MAX_JOBS=6 python3 setup.py build_ext --inplace > "$OUT/build_a80.log" 2>&1) & P80=$!
  (cd /tmp/a80ptx && LIGHTNING_ATTN_CUDA_ARCHS=80+PTX MAX_JOBS=6 python3 setup.py build_ext --inplace > "$OUT/build_a80ptx.log" 2>&1) & P80X=$! ;;
esac
for phase in ${PHASES:-bits ab tests}; do
  case $phase in
    bits)
      for t in A B; do
        dir=$([ $t = A ] && echo _ab_old || echo .)
        PYTHONPATH=$(cd $dir && pwd) timeout 150 python3 benchmarks/gpu/bits_dump.py --out "$OUT/bits_$t.json" > "$OUT/bits_$t.log" 2>&1
        echo "bits $t rc=$? $(tail -1 "$OUT/bits_$t.log")"
      done
      python3 - "$OUT/bits_A.json" "$OUT/bits_B.json" <<'PY' | tee "$OUT/bits_compare.txt"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
same = [k for k in a if a[k] == b.get(k)]
diff = [k for k in a if a[k] != b.get(k)]
print(f"bit-identical calls: {len(same)} of {len(a)}")
for k in diff:
    print("  differs:", k, {n: (a[k][n], b[k].get(n)) for n in a[k] if a[k][n] != b[k].get(n)})
print("all finite:", all(c is None or c[2] for d in (a, b) for r in d.values() for c in r.values()))
PY
      stamp "bits" ;;
    ab)
      timeout ${AB_TIMEOUT:-330} bash benchmarks/gpu/run_ab.sh > "$OUT/ab_table.txt" 2>&1; tail -18 "$OUT/ab_table.txt"
      stamp "ab rc=$?" ;;
    tests)
      # shellcheck disable=SC2086
      PYTHONPATH=$PWD timeout ${TEST_TIMEOUT:-240} python3 -m pytest -q -rf -p no:cacheprovider ${TESTS:-tests} \
        > "$OUT/tests_cuda.log" 2>&1
      rc=$?
      # a crash: the faulthandler's stack names the test
      [ $rc -gt 128 ] && grep -B2 -A25 "Fatal Python error" "$OUT/tests_cuda.log" | grep -v "^  File.*site-packages" | head -40
      grep -E "^(FAILED|ERROR)" "$OUT/tests_cuda.log" | head -20
      stamp "tests rc=$rc $(tail -1 "$OUT/tests_cuda.log" | cut -c1-300)" ;;
    ckpt)
      PYTHONPATH=$PWD timeout ${CKPT_TIMEOUT:-150} python3 benchmarks/gpu/bench_prefill_checkpoints.py \
        --out "$OUT/prefill_checkpoints.json" > "$OUT/prefill_checkpoints.txt" 2>&1
      stamp "prefill checkpoints rc=$?"; tail -8 "$OUT/prefill_checkpoints.txt" ;;
    serve)
      PYTHONPATH=$PWD timeout ${SERVE_TIMEOUT:-200} python3 benchmarks/bench_serving.py --check --max-seconds 150 \
        --out "$OUT/serving" > "$OUT/serving.log" 2>&1
      stamp "serving rc=$?"; tail -14 "$OUT/serving.log" ;;
    check)
      PYTHONPATH=$PWD timeout 200 python3 benchmarks/gpu/sm90_check.py --no-timing --out "$OUT" > "$OUT/sm90_check.log" 2>&1
      stamp "sm90_check rc=$? $(grep -iE 'of [0-9]+|passed|fail' "$OUT/sm90_check.log" | tail -2 | tr '\n' ' ')" ;;
    sanitize)
      for tool in memcheck racecheck; do
        SANITIZE_ROWS=$([ $tool = memcheck ] && echo 1 || echo 0) PYTORCH_NO_CUDA_MEMORY_CACHING=1 PYTHONPATH=$PWD \
          timeout 170 compute-sanitizer --tool $tool --error-exitcode 9 python3 benchmarks/gpu/sanitize_small.py \
          > "$OUT/sanitizer_$tool.log" 2>&1
        stamp "compute-sanitizer $tool: rc=$? $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1)"
      done ;;
    arch80)
      wait $P80X; echo "build sm_80 + PTX: rc=$?"
      (cd /tmp && PYTHONPATH=/tmp/a80ptx python3 -X faulthandler - <<'PY') 2>&1 | tee "$OUT/arch80ptx.txt"
import torch, lightning_attn as la
torch.manual_seed(0)
q, k, v = (torch.randn(2, 300, 4, 64, device="cuda", dtype=torch.bfloat16) for _ in range(3))
s = torch.rand(4, device="cuda")
o, _ = la.lightning_attn_func(q, k, v, s)
ref, _ = la.lightning_attn_func(q.cpu().float(), k.cpu().float(), v.cpu().float(), s.cpu())
err = ((o.float().cpu() - ref).norm() / ref.norm()).item()
print(f"sm_80 PTX compiled by the driver on {torch.cuda.get_device_name()}: rel err {err:.2e} against the CPU op", "ok" if err < 2e-2 else "FAIL")
PY
      wait $P80; echo "build sm_80 only: rc=$?"; tail -5 "$OUT/build_a80.log"
      (cd /tmp && PYTHONPATH=/tmp/a80 python3 -X faulthandler - <<'PY') 2>&1 | tee "$OUT/arch80_error.txt"
import torch, lightning_attn as la
q = torch.randn(1, 64, 2, 64, device="cuda", dtype=torch.bfloat16)
try:
    la.lightning_attn_func(q, q, q, torch.full((2,), 0.1, device="cuda"))
    torch.cuda.synchronize()
    print("ran on", torch.cuda.get_device_name())
except RuntimeError as e:
    print("RuntimeError:", str(e).splitlines()[0][:400])
PY
      stamp "arch80" ;;
    dtok)
      # under A (the old tree) and B, A's table first
      for t in A B; do
        dir=$([ $t = A ] && echo _ab_old || echo .)
        PYTHONPATH=$(cd $dir && pwd) timeout 120 python3 benchmarks/gpu/bench_decode_tokens.py --out "$OUT/decode_tokens_$t.json" > "$OUT/decode_tokens_$t.txt" 2>&1
        stamp "decode_tokens $t rc=$?"; tail -12 "$OUT/decode_tokens_$t.txt"
      done ;;
    prof)
      # shellcheck disable=SC2086
      PYTHONPATH=$PWD timeout ${PROF_TIMEOUT:-200} python3 benchmarks/gpu/profile_decode.py ${PROF_ARGS:-} --out "$OUT" > "$OUT/profile_decode.txt" 2>&1
      stamp "profile_decode rc=$?"; tail -7 "$OUT/profile_decode.txt"
      [ -n "${PROF_ARGS:-}" ] || PYTHONPATH=$PWD timeout ${PROF_TIMEOUT:-200} python3 benchmarks/gpu/profile_decode.py --models tnl \
        --compile-mode max-autotune-no-cudagraphs --out "$OUT" > "$OUT/profile_decode_autotune.txt" 2>&1
      stamp "profile_decode max-autotune rc=$?"; tail -5 "$OUT/profile_decode_autotune.txt" ;;
    diag)
      PYTHONPATH=$PWD timeout 60 python3 benchmarks/gpu/diag_segv.py 2>&1 | tee "$OUT/diag.txt" | cut -c1-200 ;;
    gen)
      # decode step time of the two trees' models (TNL only; bench_generation --compile: its graph and compiled modes), A B A B;
      # each tree runs B's benchmark scripts against its own lightning_attn
      mkdir -p _ab_old/benchmarks && cp benchmarks/*.py _ab_old/benchmarks/
      for t in A B A B; do
        dir=$([ $t = A ] && echo _ab_old || echo .)
        timeout ${GEN_TIMEOUT:-110} python3 $dir/benchmarks/bench_generation.py --models tnl --compile --batch-sizes 1,16 \
          --new-tokens 256 --mem-lengths 128 --max-seconds 80 --out "$OUT/gen_$t" >> "$OUT/gen_$t.log" 2>&1
        echo "gen $t rc=$? $(grep -E '^\| tnl \|' "$OUT/gen_$t.log" | tail -6 | cut -d'|' -f3-6 | tr '\n' ' ')"
      done
      stamp "gen" ;;
    wheel)
      # the wheel users get (every default target: LIGHTNING_ATTN_CUDA_ARCHS unset), installed outside
      # the checkout, then the smoke test and the CUDA kernel and edge-case tests against it. WHEEL=path
      # takes a wheel built before (carried) instead, so one wheel runs on both cards.
      repo=$PWD
      rm -rf /tmp/wheel /tmp/wheel_site && mkdir -p /tmp/wheel
      if [ -n "${WHEEL:-}" ]; then cp "$WHEEL" /tmp/wheel/; else
        (unset LIGHTNING_ATTN_CUDA_ARCHS; MAX_JOBS=16 timeout ${WHEEL_TIMEOUT:-420} python3 -m pip wheel -q --no-build-isolation \
          --no-deps -w /tmp/wheel . > "$OUT/wheel_build.log" 2>&1); echo "wheel build rc=$?"
        cp /tmp/wheel/*.whl "$OUT/" 2>/dev/null
      fi
      ls -l /tmp/wheel; sha256sum /tmp/wheel/*.whl | tee "$OUT/wheel_sha256.txt"
      python3 -m pip install -q --no-deps --target /tmp/wheel_site /tmp/wheel/*.whl > "$OUT/wheel_install.log" 2>&1
      (cd /tmp && PYTHONPATH=/tmp/wheel_site python3 "$repo/.ci/smoke_installed.py") 2>&1 | tail -3
      (cd /tmp && PYTHONPATH=/tmp/wheel_site timeout ${WHEEL_TEST_TIMEOUT:-300} python3 -m pytest -q -p no:cacheprovider \
        "$repo/tests/test_cuda_kernels.py" "$repo/tests/test_cuda_edge_cases.py" > "$OUT/wheel_tests.log" 2>&1)
      stamp "wheel tests rc=$? $(tail -1 "$OUT/wheel_tests.log" | cut -c1-200)" ;;
    edge)
      PYTHONPATH=$PWD timeout ${EDGE_TIMEOUT:-150} python3 -m pytest -q -rf -p no:cacheprovider --durations=0 tests/test_cuda_edge_cases.py > "$OUT/tests_edge.log" 2>&1
      rc=$?; grep -E "^(FAILED|ERROR)|passed|failed|s call" "$OUT/tests_edge.log" | tail -20
      stamp "edge rc=$rc" ;;
  esac
done
(cd "$OUT" && tar czf logs.tgz --exclude=logs.tgz *.log *.txt *.json 2>/dev/null && rm -f *.log bits_[AB].json)
echo "==== summary"
cat "$OUT/gpu.txt"
[ -f "$OUT/bits_compare.txt" ] && head -20 "$OUT/bits_compare.txt"
[ -f "$OUT/ab_table.txt" ] && tail -18 "$OUT/ab_table.txt"
[ -f "$OUT/tests_cuda.log" ] && grep -E "FAILED|passed|failed" "$OUT/tests_cuda.log" | tail -8
true
