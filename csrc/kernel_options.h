// Options that force a kernel path, for tests and benchmarks that compare paths (A/B runs).
// Users never need them: the defaults are the fastest paths measured. Python sets them
// through lightning_attn.kernel_options() (the private op _set_kernel_options); each CUDA
// call takes one copy at its start, so a call never sees a mix of two settings.
#pragma once

#include <cstdint>

namespace lightning_attn {

struct KernelOptions {
  bool split = true;                  // cut sequences into segments when the grid leaves SMs idle
  int64_t split_subsegments = 0;      // pass-1 sub-segments per segment; 0: the planner's choice
  bool states_in_output_rows = true;  // segment states in the output's rows where they fit (else a workspace)
  bool hopper = true;                 // sm_90a kernels where they apply (false: portable kernels only)
  bool hopper_d64 = true;             // sm_90a kernels at Dk = Dv = 64 too
  bool accumulate_in_kernel = true;   // the Dk = 256 pieces add into o / dv in the kernel (false: temporary + add)
  bool tma_loads = true;              // bulk tensor copies in the Hopper chunk kernel (false: cp.async, row stores)
  bool tma_stores = true;             // outputs staged in shared memory and written by bulk tensor stores
};

KernelOptions kernel_options();  // a copy of the current options
void set_kernel_options(const KernelOptions& options);

}  // namespace lightning_attn
