// CUDA kernels of SRMSNorm (no learned gain), row-wise with float32 statistics:
//   y = x * rstd,  rstd = rsqrt(mean(x^2) + eps)
//   dx = rstd * (dy - x * rstd^2 * mean(dy * x))
// One block per row; each pass reads the row with 16-byte loads where aligned. The
// second read of a row (fwd: x; bwd: dy, x) hits L1/L2.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "kernels/mma_utils.cuh"
#include "torch_cuda_headers.h"

namespace lightning_attn {
namespace {

using at::Tensor;
constexpr int kThreads = 256;

__device__ __forceinline__ float block_sum(float v, float* red) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  __syncthreads();  // red may still be read by a previous call
  if (lane == 0) red[warp] = v;
  __syncthreads();
  float s = 0.f;
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) s += red[w];
  return s;
}

// Visits the row in 16-byte groups (VEC elements) when vec, else element by element.
template <typename T>
struct Row {
  static constexpr int VEC = 16 / sizeof(T);
  const T* p;
  int D;
  bool vec;
  template <typename F>
  __device__ __forceinline__ void for_each(F f) const {
    if (vec) {
      for (int i = threadIdx.x * VEC; i < D; i += kThreads * VEC) {
        const uint4 u = *reinterpret_cast<const uint4*>(p + i);
        const T* e = reinterpret_cast<const T*>(&u);
#pragma unroll
        for (int j = 0; j < VEC; ++j) f(i + j, cuda::to_float(e[j]));
      }
    } else {
      for (int i = threadIdx.x; i < D; i += kThreads) f(i, cuda::to_float(p[i]));
    }
  }
};

template <typename T>
__global__ void __launch_bounds__(kThreads) srms_fwd_kernel(const T* x, T* y, float* rstd, int D,
                                                            float eps, bool vec) {
  __shared__ float red[kThreads / 32];
  const int64_t row = blockIdx.x;
  const Row<T> xr{x + row * D, D, vec};
  float ss = 0.f;
  xr.for_each([&](int, float a) { ss += a * a; });
  const float r = rsqrtf(block_sum(ss, red) / float(D) + eps);
  T* yr = y + row * D;
  xr.for_each([&](int i, float a) { yr[i] = cuda::from_float<T>(a * r); });
  if (threadIdx.x == 0) rstd[row] = r;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) srms_bwd_kernel(const T* dy, const T* x,
                                                            const float* rstd, T* dx, int D,
                                                            bool vec) {
  __shared__ float red[kThreads / 32];
  const int64_t row = blockIdx.x;
  const Row<T> xr{x + row * D, D, vec};
  const T* dyr = dy + row * D;
  float dot = 0.f;
  xr.for_each([&](int i, float a) { dot += a * cuda::to_float(dyr[i]); });
  const float r = rstd[row];
  const float c = r * r * block_sum(dot, red) / float(D);
  T* dxr = dx + row * D;
  xr.for_each([&](int i, float a) { dxr[i] = cuda::from_float<T>(r * (cuda::to_float(dyr[i]) - a * c)); });
}

bool rows_vec16(const Tensor& x, int64_t D) {
  return reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 && (D * x.element_size()) % 16 == 0;
}

template <typename F>
void dispatch_float(at::ScalarType t, F f) {
  switch (t) {
    case at::kFloat: f(float{}); break;
    case at::kHalf: f(__half{}); break;
    case at::kBFloat16: f(__nv_bfloat16{}); break;
    default: TORCH_CHECK_VALUE(false, "lightning_attn.srms_norm: float64 is supported on the CPU only");
  }
}

std::tuple<Tensor, Tensor> srms_norm_fwd_cuda(const Tensor& x_in, double eps) {
  check_srms_norm_input(x_in, eps);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Tensor x = x_in.contiguous();
  const int64_t D = x.size(-1), rows = x.numel() / D;
  Tensor y = at::empty_like(x);
  auto rshape = x.sizes().vec();
  rshape.pop_back();
  Tensor rstd = at::empty(rshape, x.options().dtype(at::kFloat));
  if (rows == 0) return {y, rstd};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool vec = rows_vec16(x, D);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    srms_fwd_kernel<T><<<unsigned(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(x.data_ptr()), static_cast<T*>(y.data_ptr()), rstd.data_ptr<float>(),
        int(D), float(eps), vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, rstd};
}

Tensor srms_norm_bwd_cuda(const Tensor& dy_in, const Tensor& x_in, const Tensor& rstd_in) {
  check_srms_norm_bwd_inputs(dy_in, x_in, rstd_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const Tensor x = x_in.contiguous(), dy = dy_in.contiguous(),
               rstd = rstd_in.to(at::kFloat).contiguous();
  const int64_t D = x.size(-1), rows = x.numel() / std::max<int64_t>(D, 1);
  Tensor dx = at::empty_like(x);
  if (rows == 0 || D == 0) return dx;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool vec = rows_vec16(x, D) && rows_vec16(dy, D);
  dispatch_float(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    srms_bwd_kernel<T><<<unsigned(rows), kThreads, 0, stream>>>(
        static_cast<const T*>(dy.data_ptr()), static_cast<const T*>(x.data_ptr()),
        rstd.data_ptr<float>(), static_cast<T*>(dx.data_ptr()), int(D), vec);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return dx;
}

}  // namespace

TORCH_LIBRARY_IMPL(lightning_attn, CUDA, m) {
  m.impl("srms_norm_fwd", &srms_norm_fwd_cuda);
  m.impl("srms_norm_bwd", &srms_norm_bwd_cuda);
}

}  // namespace lightning_attn
