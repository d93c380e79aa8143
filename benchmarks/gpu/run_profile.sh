#!/usr/bin/env bash
# Runs on the GPU machine: builds, then the forward of benchmarks/gpu/profile_fwd.py under
# torch.profiler and under Nsight Compute (clocks left alone), v6 (Hopper kernel) and v3.
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
python3 benchmarks/gpu/profile_fwd.py --table 2>&1 | tee "$OUT/profile_table.log" | head -20
for v in ${VARIANTS:-1 0}; do
  LIGHTNING_ATTN_SM90=$v timeout 240 ncu --clock-control none --kernel-name regex:chunk_kernel --launch-skip 1 --launch-count 1 \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
    --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
    --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
    python3 benchmarks/gpu/profile_fwd.py ${PROFILE_ARGS:-} > "$OUT/ncu_sm90_$v.log" 2>&1
  echo "== ncu LIGHTNING_ATTN_SM90=$v rc=$?"
  grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Stall|Issued Ipc|Registers|Achieved Occupancy|One or More|No Eligible|L1/TEX Hit|L2 Hit|Mem Busy|Max Bandwidth|Warp Cycles Per Issued" "$OUT/ncu_sm90_$v.log" | head -30
  grep -E "issue_stalled" "$OUT/ncu_sm90_$v.log" | awk '$NF+0 > 0.05' | sort -k3 -g -r | head -12
done
