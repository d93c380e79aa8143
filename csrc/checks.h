// Input validation shared by the CPU and CUDA backends. Every check names the
// argument and the expected shape; all of them run before any kernel launches.
// lightning_attn/ops.py mirrors the shape rules with torch._check in the fake kernels.
#pragma once

#include <ATen/ATen.h>
#include <optional>
#include <vector>

namespace lightning_attn {

constexpr int64_t kMaxHeadDim = 256;

// Sizes of one call, read off the canonical [B, T, H, D] views.
struct AttnDims {
  int64_t B, T, H, Dk, Dv;
  int64_t N;               // number of sequences: B, or cu_seqlens.numel() - 1
  bool varlen;
  at::ScalarType state_dtype;  // float32 (float64 when the inputs are float64)
};

// Accumulation and state dtype for inputs of x's dtype: float32, float64 for float64 inputs.
inline at::ScalarType acc_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// [B, H, T, D] -> [B, T, H, D] view when head_first; never copies.
inline at::Tensor canonical(const at::Tensor& x, bool head_first) {
  return head_first ? x.transpose(1, 2) : x;
}

// Shape of an output in the caller's layout: [B, T, H, D], or [B, H, T, D] with head_first.
inline std::vector<int64_t> user_shape(const AttnDims& d, int64_t D, bool head_first) {
  return head_first ? std::vector<int64_t>{d.B, d.H, d.T, D} : std::vector<int64_t>{d.B, d.T, d.H, D};
}

// A state output [N, H, Dk, Dv] in the state dtype, or an empty [0] tensor when not asked for.
inline at::Tensor empty_state(const AttnDims& d, bool wanted, const at::TensorOptions& opts) {
  const auto o = opts.dtype(d.state_dtype);
  return wanted ? at::empty({d.N, d.H, d.Dk, d.Dv}, o) : at::empty({0}, o);
}

AttnDims check_fwd_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const std::optional<at::Tensor>& slope,
                          const std::optional<at::Tensor>& initial_state,
                          const std::optional<at::Tensor>& cu_seqlens, bool head_first);

// do must match o = fwd(q, k, v): same shape as v, q's dtype and device.
void check_bwd_inputs(const at::Tensor& dout, const at::Tensor& v, const AttnDims& d,
                      const std::optional<at::Tensor>& d_final_state, bool head_first);

// q, k: [B, H, Dk]; v: [B, H, Dv]; state: [B, H, Dk, Dv] float32, contiguous.
void check_decode_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& state, const std::optional<at::Tensor>& slope);

void check_srms_norm_input(const at::Tensor& x, double eps);

// Values of slope and cu_seqlens; reads them, so only for tensors on the CPU
// (CUDA ops never synchronise with the host: their kernels clamp instead).
void check_slope_values(const at::Tensor& slope);
void check_cu_seqlens_values(const at::Tensor& cu_seqlens, int64_t T);

}  // namespace lightning_attn
