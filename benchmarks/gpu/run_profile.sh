#!/usr/bin/env bash
# Runs on the GPU machine: builds, then the forward of benchmarks/gpu/profile_fwd.py under
# torch.profiler and under Nsight Compute (clocks left alone), Hopper (--hopper 1) and portable kernels (0).
# PROFILES: "kernel-regex:profile_fwd.py args" entries (commas for spaces), e.g.
#   PROFILES="chunk_kernel: dkdv_kernel:--bwd"   (the second launch of each is profiled)
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
MAX_JOBS=16 python3 setup.py build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -50 "$OUT/build.log"; exit 1; }
python3 benchmarks/gpu/profile_fwd.py --table 2>&1 | tee "$OUT/profile_table.log" | head -20
for spec in ${PROFILES:-chunk_kernel:}; do
  kern=${spec%%:*}
  args=$(echo "${spec#*:}" | tr , ' ')
  for v in ${VARIANTS:-1 0}; do
    log="$OUT/ncu_${kern}_sm90_$v.log"
    timeout 240 ncu --clock-control none --kernel-name regex:$kern --launch-skip 1 --launch-count 1 \
      --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats \
      --section Occupancy --section LaunchStats --section ComputeWorkloadAnalysis \
      --metrics regex:smsp__average_warps_issue_stalled_.*_per_issue_active.ratio \
      python3 benchmarks/gpu/profile_fwd.py --hopper $v $args ${PROFILE_ARGS:-} > "$log" 2>&1
    echo "== ncu $kern hopper=$v rc=$?"
    grep -E "Duration|DRAM Throughput|Memory Throughput|Compute \(SM\)|Issued Ipc|Registers|Achieved Occupancy|No Eligible|L2 Hit|Warp Cycles Per Issued" "$log" | head -16
    grep -E "issue_stalled" "$log" | awk '$NF+0 > 0.05' | sort -k3 -g -r | head -10
  done
done
