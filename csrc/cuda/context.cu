// Device probing and the per-call context (context.h).
#include "context.h"

#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "launch.h"
#include "torch_cuda_headers.h"

// The gencode targets of this build, as setup.py and CMake pass them ("80_86_89_90a").
#ifndef LIGHTNING_ATTN_BUILT_ARCHS
#define LIGHTNING_ATTN_BUILT_ARCHS unknown
#endif
#define LIGHTNING_ATTN_STR2(x) #x
#define LIGHTNING_ATTN_STR(x) LIGHTNING_ATTN_STR2(x)

namespace lightning_attn {
namespace cuda {
namespace {

std::string built_archs() {
  std::string s = LIGHTNING_ATTN_STR(LIGHTNING_ATTN_BUILT_ARCHS);
  for (char& ch : s)
    if (ch == '_') ch = ';';
  return s;
}

DeviceInfo probe_device(int dev) {
  cudaDeviceProp prop{};
  C10_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  DeviceInfo info;
  info.num_sms = prop.multiProcessorCount;
  info.cc_major = prop.major;
  info.cc_minor = prop.minor;
  // numbers as strings: see the note on messages in csrc/checks.cpp
  const std::string cc = std::to_string(prop.major) + "." + std::to_string(prop.minor);
  const std::string arch = std::to_string(prop.major) + std::to_string(prop.minor);
  TORCH_CHECK(portable_binary_version() > 0, "lightning_attn: this build has no CUDA kernel for ", prop.name,
              " (compute capability ", cc, "; built for \"", built_archs(),
              "\"). Rebuild with LIGHTNING_ATTN_CUDA_ARCHS including \"", arch,
              "\", e.g. LIGHTNING_ATTN_CUDA_ARCHS=\"", arch,
              "\" pip install --no-build-isolation .");
  info.hopper = hopper_binary();
  return info;
}

}  // namespace

const DeviceInfo& current_device_info() {
  static std::mutex mutex;
  static std::vector<std::unique_ptr<DeviceInfo>> cache;
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  const std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() <= size_t(dev)) cache.resize(size_t(dev) + 1);
  if (!cache[dev]) cache[dev] = std::make_unique<DeviceInfo>(probe_device(dev));
  return *cache[dev];
}

CallContext make_context(const AttnDims& d, const std::optional<at::Tensor>& slope,
                         const std::optional<at::Tensor>& cu_seqlens) {
  CallContext c;
  c.T = d.T, c.H = d.H, c.N = d.N;
  if (slope.has_value()) {
    c.slope_f = slope->to(at::kFloat).contiguous();
    c.slope = c.slope_f.data_ptr<float>();
  }
  if (cu_seqlens.has_value()) {
    c.cu = cu_seqlens->contiguous();
    if (c.cu.scalar_type() == at::kInt)
      c.cu32 = c.cu.data_ptr<int32_t>();
    else
      c.cu64 = c.cu.data_ptr<int64_t>();
  }
  c.device = current_device_info();
  c.options = kernel_options();
  return c;
}

}  // namespace cuda
}  // namespace lightning_attn
