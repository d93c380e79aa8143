// What every kernel choice of one CUDA call depends on, gathered once at its start: the
// sizes, the decay and cu_seqlens pointers, the device, and the kernel options.
#pragma once

#include <cstdint>
#include <optional>

#include <ATen/ATen.h>

#include "../checks.h"
#include "../kernel_options.h"

namespace lightning_attn {
namespace cuda {

// The current GPU, as the dispatch sees it (probed once per device).
struct DeviceInfo {
  int num_sms = 0;
  int cc_major = 0, cc_minor = 0;
  bool hopper = false;  // this build's sm_90a kernels run here (H100, H200)
};

// The current device's info. Raises, naming the GPU, its compute capability and
// LIGHTNING_ATTN_CUDA_ARCHS, where this build holds no kernel the GPU can run.
const DeviceInfo& current_device_info();

struct CallContext {
  int64_t T = 0, H = 0, N = 0;  // tokens per batch row, heads, sequences
  const int32_t* cu32 = nullptr;  // cu_seqlens, one of the two or none
  const int64_t* cu64 = nullptr;
  const float* slope = nullptr;  // float32 [H], or null (no decay)
  DeviceInfo device;
  KernelOptions options;
  at::Tensor slope_f, cu;  // own the buffers the pointers above address
};

// The context of a fwd or bwd call with dims d. slope is converted to float32 here.
CallContext make_context(const AttnDims& d, const std::optional<at::Tensor>& slope,
                         const std::optional<at::Tensor>& cu_seqlens);

// Whether the Hopper kernels may serve Dk = Dv = d in this call.
inline bool hopper_for(const CallContext& c, int64_t d) {
  return c.device.hopper && c.options.hopper && (d != 64 || c.options.hopper_d64);
}

}  // namespace cuda
}  // namespace lightning_attn
