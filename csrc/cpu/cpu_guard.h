// Dispatch state for CPU kernels written with ATen calls: those inner calls must
// not be recorded by autograd (inputs may require grad) nor re-cast by autocast
// (an outer torch.autocast would turn float32 block products into bfloat16).
#pragma once

#include <ATen/ATen.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

namespace lightning_attn {

struct CpuKernelGuard {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  c10::impl::ExcludeDispatchKeyGuard no_autocast{c10::autocast_dispatch_keyset};
};

}  // namespace lightning_attn
