// Meta kernels of every op: the shared input checks (checks.h) and the outputs' shapes,
// dtypes and layouts, with no computation. FakeTensorMode, torch.compile and opcheck trace
// the ops through these kernels (Python registers no fake kernel), so a bad input fails
// there with the error eager mode raises. Under dynamic shapes the sizes are symbolic:
// the checks read c10::SymInt and the outputs come from at::empty_symint.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"

namespace lightning_attn {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor> fwd_meta(const Tensor& q, const Tensor& k, const Tensor& v,
                                    const std::optional<Tensor>& slope, double /*scale*/,
                                    const std::optional<Tensor>& initial_state,
                                    const std::optional<Tensor>& cu_seqlens, bool head_first,
                                    bool output_final_state) {
  const SymAttnDims d = check_fwd_inputs_sym(q, k, v, slope, initial_state, cu_seqlens, head_first);
  return {at::empty_symint(user_shape(d, d.Dv, head_first), q.options()),
          empty_state(d, output_final_state, q.options())};
}

std::tuple<Tensor, Tensor, Tensor> fwd_checkpoints_meta(const Tensor& q, const Tensor& k, const Tensor& v,
                                                        const std::optional<Tensor>& slope, double /*scale*/,
                                                        const std::optional<Tensor>& initial_state,
                                                        const std::optional<Tensor>& cu_seqlens, bool head_first,
                                                        int64_t checkpoint_every, c10::SymInt num_checkpoints) {
  const SymAttnDims d = check_fwd_checkpoints_inputs_sym(q, k, v, slope, initial_state, cu_seqlens, head_first,
                                                         checkpoint_every, num_checkpoints);
  return {at::empty_symint(user_shape(d, d.Dv, head_first), q.options()), empty_state(d, true, q.options()),
          at::empty_symint({d.N, num_checkpoints, d.H, d.Dk, d.Dv}, q.options().dtype(d.state_dtype))};
}

// The pool is updated in place: only o is allocated.
Tensor fwd_slots_meta(const Tensor& q, const Tensor& k, const Tensor& v, const std::optional<Tensor>& slope,
                      double /*scale*/, Tensor& state, const Tensor& slot_ids,
                      const std::optional<Tensor>& cu_seqlens, bool head_first) {
  const SymAttnDims d = check_fwd_slots_inputs_sym(q, k, v, slope, state, slot_ids, cu_seqlens, head_first);
  return at::empty_symint(user_shape(d, d.Dv, head_first), q.options());
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_meta(
    const Tensor& dout, const Tensor& q, const Tensor& k, const Tensor& v,
    const std::optional<Tensor>& slope, double /*scale*/, const std::optional<Tensor>& initial_state,
    const std::optional<Tensor>& d_final_state, const std::optional<Tensor>& cu_seqlens,
    bool head_first) {
  const SymAttnDims d = check_fwd_inputs_sym(q, k, v, slope, initial_state, cu_seqlens, head_first);
  check_bwd_inputs(dout, v, d, d_final_state, head_first);
  const auto dk_shape = user_shape(d, d.Dk, head_first);
  return {at::empty_symint(dk_shape, q.options()), at::empty_symint(dk_shape, q.options()),
          at::empty_symint(user_shape(d, d.Dv, head_first), q.options()),
          empty_state(d, initial_state.has_value(), q.options())};
}

// state is updated in place: its metadata stays, so only o is allocated.
Tensor decode_meta(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& state,
                   const std::optional<Tensor>& slope, double /*scale*/) {
  check_decode_inputs(q, k, v, state, slope);
  return at::empty_symint({q.sym_size(0), q.sym_size(1), v.sym_size(2)}, q.options());
}

std::tuple<Tensor, Tensor> decode_tokens_meta(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& state,
                                              const std::optional<Tensor>& slope, double /*scale*/,
                                              const std::optional<Tensor>& slot_ids,
                                              const std::optional<Tensor>& num_accepted, bool output_states) {
  check_decode_tokens_inputs(q, k, v, state, slope, slot_ids, num_accepted, output_states);
  const auto st = q.options().dtype(acc_dtype(q));
  return {at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2), v.sym_size(3)}, q.options()),
          output_states ? at::empty_symint({q.sym_size(0), q.sym_size(1), q.sym_size(2), q.sym_size(3), v.sym_size(3)}, st)
                        : at::empty({0}, st)};
}

std::tuple<Tensor, Tensor> srms_norm_fwd_meta(const Tensor& x, double eps) {
  check_srms_norm_input(x, eps);
  return {at::empty_like(x),
          at::empty_symint(x.sym_sizes().slice(0, x.dim() - 1), x.options().dtype(acc_dtype(x)))};
}

Tensor srms_norm_bwd_meta(const Tensor& dy, const Tensor& x, const Tensor& rstd) {
  check_srms_norm_bwd_inputs(dy, x, rstd);
  return at::empty_like(x);
}

}  // namespace

TORCH_LIBRARY_IMPL(lightning_attn, Meta, m) {
  m.impl("fwd", &fwd_meta);
  m.impl("fwd_slots", &fwd_slots_meta);
  m.impl("fwd_checkpoints", &fwd_checkpoints_meta);
  m.impl("bwd", &bwd_meta);
  m.impl("decode", &decode_meta);
  m.impl("decode_tokens", &decode_tokens_meta);
  m.impl("srms_norm_fwd", &srms_norm_fwd_meta);
  m.impl("srms_norm_bwd", &srms_norm_bwd_meta);
}

}  // namespace lightning_attn
