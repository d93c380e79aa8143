// The input rules of every op, written once and called by every kernel that receives
// the inputs: the CPU kernels (csrc/cpu), the CUDA host code (csrc/cuda) and the Meta
// kernels (csrc/meta), which FakeTensorMode and torch.compile run to trace the ops. So a
// bad input raises the same error, before any kernel launches, in eager mode, under fake
// tensors and in a compiled graph; Python keeps no copy of the rules.
//
// The rules read sizes and strides as c10::SymInt: one code serves concrete tensors and
// the symbolic (dynamic-shape) tensors of a trace, where a rule becomes a guard, as with
// ATen's TORCH_SYM_CHECK. Every check raises c10::ValueError (Python's ValueError) naming
// the argument and the expected shape. Checks that read values (slope, cu_seqlens) run
// only on CPU tensors: CUDA kernels never synchronise with the host, Meta tensors hold none.
#pragma once

#include <ATen/ATen.h>
#include <c10/core/SymInt.h>
#include <optional>
#include <vector>

#include "op_limits.h"

namespace lightning_attn {

// Sizes of one call, read off the canonical [B, T, H, D] views. Int is int64_t for the
// kernels, which see concrete tensors, and c10::SymInt for the Meta kernels.
template <typename Int>
struct AttnDimsOf {
  using Size = Int;
  Int B, T, H, Dk, Dv;
  Int N;                       // number of sequences: B, or cu_seqlens.numel() - 1
  bool varlen;
  at::ScalarType state_dtype;  // float32 (float64 when the inputs are float64)
};
using AttnDims = AttnDimsOf<int64_t>;
using SymAttnDims = AttnDimsOf<c10::SymInt>;

// Accumulation and state dtype for inputs of x's dtype: float32, float64 for float64 inputs.
inline at::ScalarType acc_dtype(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// [B, H, T, D] -> [B, T, H, D] view when head_first; never copies.
inline at::Tensor canonical(const at::Tensor& x, bool head_first) {
  return head_first ? x.transpose(1, 2) : x;
}

// Shape of an output in the caller's layout: [B, T, H, D], or [B, H, T, D] with head_first.
template <typename Int>
std::vector<Int> user_shape(const AttnDimsOf<Int>& d, const typename AttnDimsOf<Int>::Size& D,
                            bool head_first) {
  return head_first ? std::vector<Int>{d.B, d.H, d.T, D} : std::vector<Int>{d.B, d.T, d.H, D};
}

// A state output [N, H, Dk, Dv] in the state dtype, or an empty [0] tensor when not asked for.
template <typename Int>
at::Tensor empty_state(const AttnDimsOf<Int>& d, bool wanted, const at::TensorOptions& opts) {
  const auto o = opts.dtype(d.state_dtype);
  if (!wanted) return at::empty({0}, o);
  return at::empty_symint({c10::SymInt(d.N), c10::SymInt(d.H), c10::SymInt(d.Dk), c10::SymInt(d.Dv)},
                          o);
}

// q, k: [B, T, H, Dk]; v: [B, T, H, Dv] ([B, H, T, D] with head_first); slope [H];
// initial_state [N, H, Dk, Dv]; cu_seqlens [N + 1] with B = 1. Returns the sizes.
SymAttnDims check_fwd_inputs_sym(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const std::optional<at::Tensor>& slope,
                                 const std::optional<at::Tensor>& initial_state,
                                 const std::optional<at::Tensor>& cu_seqlens, bool head_first);
// The same rules for concrete tensors, with the sizes as integers.
AttnDims check_fwd_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const std::optional<at::Tensor>& slope,
                          const std::optional<at::Tensor>& initial_state,
                          const std::optional<at::Tensor>& cu_seqlens, bool head_first);

// fwd_slots (a prefill into a state pool): q, k, v, slope, cu_seqlens as for fwd; state: a
// pool [num_slots, H, Dk, Dv] in the state dtype; slot_ids: int32 [N], on q's device. Sizes,
// dtypes and devices only (the ids' values: check_slot_ids_values).
SymAttnDims check_fwd_slots_inputs_sym(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const std::optional<at::Tensor>& slope, const at::Tensor& state,
                                       const at::Tensor& slot_ids, const std::optional<at::Tensor>& cu_seqlens,
                                       bool head_first);
AttnDims check_fwd_slots_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const std::optional<at::Tensor>& slope, const at::Tensor& state,
                                const at::Tensor& slot_ids, const std::optional<at::Tensor>& cu_seqlens,
                                bool head_first);

// fwd_checkpoints: the inputs of fwd; checkpoint_every a multiple of 64 (a checkpoint at the
// end of a kernel chunk) and num_checkpoints >= 0.
SymAttnDims check_fwd_checkpoints_inputs_sym(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const std::optional<at::Tensor>& slope,
                                             const std::optional<at::Tensor>& initial_state,
                                             const std::optional<at::Tensor>& cu_seqlens, bool head_first,
                                             int64_t checkpoint_every, const c10::SymInt& num_checkpoints);
AttnDims check_fwd_checkpoints_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& slope,
                                      const std::optional<at::Tensor>& initial_state,
                                      const std::optional<at::Tensor>& cu_seqlens, bool head_first,
                                      int64_t checkpoint_every, int64_t num_checkpoints);
// The checkpoints' token spacing the op takes: a chunk of the kernels (64 tokens).
constexpr int64_t kCheckpointGranule = 64;

// do must match o = fwd(q, k, v): same shape as v, q's dtype and device;
// d_final_state: [N, H, Dk, Dv] in the state dtype. d comes from check_fwd_inputs.
void check_bwd_inputs(const at::Tensor& dout, const at::Tensor& v, const SymAttnDims& d,
                      const std::optional<at::Tensor>& d_final_state, bool head_first);
void check_bwd_inputs(const at::Tensor& dout, const at::Tensor& v, const AttnDims& d,
                      const std::optional<at::Tensor>& d_final_state, bool head_first);

// q, k: [B, H, Dk]; v: [B, H, Dv]; state: [B, H, Dk, Dv] float32, contiguous; slope [H].
void check_decode_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& state, const std::optional<at::Tensor>& slope);

// decode_tokens: q, k: [B, K, H, Dk]; v: [B, K, H, Dv] with 1 <= K <= kMaxDecodeTokens; state:
// [B, H, Dk, Dv], or a pool [num_slots, H, Dk, Dv] with slot_ids (int32 [B]); num_accepted: int32
// or int64 [B], not with output_states. Sizes, dtypes and devices only (see the values check).
void check_decode_tokens_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& state, const std::optional<at::Tensor>& slope,
                                const std::optional<at::Tensor>& slot_ids,
                                const std::optional<at::Tensor>& num_accepted, bool output_states);

// x: [..., D] with D >= 1, a float dtype; eps >= 0.
void check_srms_norm_input(const at::Tensor& x, double eps);

// dy: x's shape and dtype; rstd: x.shape[:-1] in the state dtype, as srms_norm_fwd returns it.
void check_srms_norm_bwd_inputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& rstd);

// Values of slope and cu_seqlens; reads them, so only for tensors on the CPU
// (CUDA ops never synchronise with the host: their kernels clamp instead).
void check_slope_values(const at::Tensor& slope);
void check_cu_seqlens_values(const at::Tensor& cu_seqlens, int64_t T);
// slot_ids in [-1, num_slots) and distinct apart from -1 (op names the op in the message).
void check_slot_ids_values(const at::Tensor& slot_ids, int64_t num_slots, const char* op);
// slot_ids as above; num_accepted in [0, K].
void check_decode_tokens_values(const std::optional<at::Tensor>& slot_ids, int64_t num_slots,
                                const std::optional<at::Tensor>& num_accepted, int64_t K);

}  // namespace lightning_attn
