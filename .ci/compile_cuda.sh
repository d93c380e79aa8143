#!/usr/bin/env bash
# Compile-checks every CUDA source for the default targets (sm_80, sm_86, sm_89 and its PTX: the
# portable kernels; sm_90a: the Hopper kernels too) with the installed torch's headers, one nvcc call per
# file with all targets, two files at a time. Runs on machines without a GPU: nothing is linked
# or executed. Prints the sm_90a register report and the total time; fails on any error and on
# wgmma serialised by ptxas (C7510-C7515, "Potential Performance Loss": a silent slowdown).
# Usage: bash .ci/compile_cuda.sh [file.cu ...]   (default: every .cu under csrc/cuda)
#   ARCHS="90a" bash .ci/compile_cuda.sh ...      (other targets)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
ARCHS=${ARCHS:-80 86 89+PTX 90a}
# The standard torch's cpp_extension builds extensions with (setup.py leaves it to torch):
# C++20 for the torch CI installs.
CXX_STD=${CXX_STD:-c++20}
TORCH_INC=$(python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
PY_INC=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
ABI=$(python3 -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(find csrc/cuda -name "*.cu" | sort)
out=$(mktemp -d)
gencodes=""
for a in $ARCHS; do  # "NN+PTX": PTX of NN too, as setup.py
  sm=${a%+PTX}
  gencodes+=" -gencode=arch=compute_$sm,code=sm_$sm"
  [ "$sm" = "$a" ] || gencodes+=" -gencode=arch=compute_$sm,code=compute_$sm"
done
export CXX_STD NVCC TORCH_INC PY_INC ABI out gencodes ARCHS
compile_one() {
  f=$1
  log="$out/${f//\//_}.log"
  # shellcheck disable=SC2086
  if ! "$NVCC" -c -std=$CXX_STD -O3 --use_fast_math --expt-relaxed-constexpr $gencodes -Xptxas=-v \
      -D_GLIBCXX_USE_CXX11_ABI="$ABI" -DLIGHTNING_ATTN_BUILT_ARCHS=ci \
      -Icsrc -I"$TORCH_INC" -I"$TORCH_INC/torch/csrc/api/include" -I"$PY_INC" \
      "$f" -o "$out/${f//\//_}.o" > "$log" 2>&1; then
    echo "FAILED: $f"; cat "$log"; return 1
  fi
  if grep -qE "C751[0-5]" "$log"; then echo "wgmma serialised: $f"; grep -E "C751[0-5]" "$log"; return 1; fi
  echo "nvcc [$ARCHS]: $f"
  # sm_90a register report (the 16-bit Hopper kernels' budget is tight)
  awk '/for .sm_90a/{on=1} /for .sm_(80|86|89)/{on=0} on && /Used [0-9]+ registers|spill/' "$log" | sed 's/^/  /' | head -24
}
export -f compile_one
t0=$(date +%s)
printf '%s\n' "${files[@]}" | xargs -P "${JOBS:-2}" -I{} bash -c 'compile_one "$@"' _ {}
echo "compiled ${#files[@]} CUDA sources for [$ARCHS] in $(( $(date +%s) - t0 )) s"
rm -rf "$out"
