// C++ API for LibTorch users: the same ops as Python's lightning_attn, called
// through the dispatcher so CPU and CUDA tensors both work. Link against the
// library built by CMakeLists.txt (target lightning_attn). Autograd is registered
// from Python; from C++, call backward() yourself.
//
// Shapes: q, k [B, T, H, Dk]; v [B, T, H, Dv] ([B, H, T, D] with head_first);
// slope float32 [H]; states float32 [N, H, Dk, Dv]; see README.md for the contract.
#pragma once

#include <ATen/ATen.h>
#include <optional>
#include <tuple>

namespace lightning_attn {

// o, final_state (an empty tensor unless output_final_state).
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k,
                                           const at::Tensor& v,
                                           const std::optional<at::Tensor>& slope = std::nullopt,
                                           double scale = 1.0,
                                           const std::optional<at::Tensor>& initial_state = std::nullopt,
                                           const std::optional<at::Tensor>& cu_seqlens = std::nullopt,
                                           bool head_first = false, bool output_final_state = false);

// A prefill into a state pool [num_slots, H, Dk, Dv]: sequence n starts from row slot_ids[n]
// (int32 [N]; -1: from zeros, nothing kept) and its final state is written into that row in
// place. Returns o. No autograd. See the schema in ops.cpp.
at::Tensor forward_slots(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& state_pool,
                         const at::Tensor& slot_ids, const std::optional<at::Tensor>& slope = std::nullopt,
                         double scale = 1.0, const std::optional<at::Tensor>& cu_seqlens = std::nullopt,
                         bool head_first = false);

// o, final_state and the checkpoints [N, num_checkpoints, H, Dk, Dv]: the state after every
// checkpoint_every tokens (a multiple of 64) of each sequence, in one pass. See ops.cpp.
std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_checkpoints(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int64_t checkpoint_every,
    int64_t num_checkpoints, const std::optional<at::Tensor>& slope = std::nullopt, double scale = 1.0,
    const std::optional<at::Tensor>& initial_state = std::nullopt,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt, bool head_first = false);

// dq, dk, dv, d_initial_state (empty without initial_state).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const std::optional<at::Tensor>& slope = std::nullopt, double scale = 1.0,
    const std::optional<at::Tensor>& initial_state = std::nullopt,
    const std::optional<at::Tensor>& d_final_state = std::nullopt,
    const std::optional<at::Tensor>& cu_seqlens = std::nullopt, bool head_first = false);

// One decoding step; updates state [B, H, Dk, Dv] in place and returns o [B, H, Dv].
at::Tensor decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& state,
                  const std::optional<at::Tensor>& slope = std::nullopt, double scale = 1.0);

// K tokens per sequence (q, k [B, K, H, Dk], v [B, K, H, Dv]) from state [B, H, Dk, Dv] or from
// the rows slot_ids of a pool [num_slots, H, Dk, Dv]: o [B, K, H, Dv] and, with output_states,
// every state [B, K, H, Dk, Dv] (the state then stays as it was); else the state advances by
// num_accepted[b] tokens, or all K. See the schema in ops.cpp.
std::tuple<at::Tensor, at::Tensor> decode_tokens(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 at::Tensor& state,
                                                 const std::optional<at::Tensor>& slope = std::nullopt,
                                                 double scale = 1.0,
                                                 const std::optional<at::Tensor>& slot_ids = std::nullopt,
                                                 const std::optional<at::Tensor>& num_accepted = std::nullopt,
                                                 bool output_states = false);

// SRMSNorm: y, rstd = srms_norm_forward(x, eps); dx = srms_norm_backward(dy, x, rstd).
std::tuple<at::Tensor, at::Tensor> srms_norm_forward(const at::Tensor& x, double eps = 1e-6);
at::Tensor srms_norm_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& rstd);

}  // namespace lightning_attn
