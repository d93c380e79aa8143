#!/usr/bin/env bash
# Compile-checks every CUDA source for sm_90a (H100/H200) with the installed torch's
# headers. Runs on machines without a GPU: nothing is linked or executed.
# Usage: bash .ci/compile_cuda.sh [file.cu ...]   (default: every .cu under csrc/cuda)
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
TORCH_INC=$(python3 -c "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'include'))")
PY_INC=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['include'])")
ABI=$(python3 -c "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))")
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(find csrc/cuda -name "*.cu" | sort)
out=$(mktemp -d)
for f in "${files[@]}"; do
  [ -e "$f" ] || continue
  echo "nvcc sm_90a: $f"
  "$NVCC" -c -std=c++17 -O3 --use_fast_math --expt-relaxed-constexpr \
    -gencode=arch=compute_90a,code=sm_90a -Xptxas=-v \
    -D_GLIBCXX_USE_CXX11_ABI="$ABI" \
    -Icsrc -I"$TORCH_INC" -I"$TORCH_INC/torch/csrc/api/include" -I"$PY_INC" \
    "$f" -o "$out/${f////_}.o" 2> "$out/${f////_}.log" || { cat "$out/${f////_}.log"; exit 1; }
  grep -E "spill|Used [0-9]+ registers" "$out/${f////_}.log" | sed 's/^/  /' | head -40 || true
  # wgmma serialized by ptxas (C7510-C7515, "Potential Performance Loss": each waits for the last),
  # a silent slowdown (KERNEL_NOTES v15, v19)
  if grep -qE "C751[0-5]" "$out/${f////_}.log"; then grep -E "C751[0-5]" "$out/${f////_}.log"; exit 1; fi
done
rm -rf "$out"
