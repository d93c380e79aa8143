// The C++ API of lightning_attn.h: typed dispatcher calls to the registered ops.
#include "lightning_attn.h"

#include <ATen/core/dispatch/Dispatcher.h>

namespace lightning_attn {
namespace {

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using OptT = const std::optional<at::Tensor>&;

}  // namespace

std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           OptT slope, double scale, OptT initial_state, OptT cu_seqlens,
                                           bool head_first, bool output_final_state) {
  static const auto handle = op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, OptT, double, OptT, OptT, bool, bool)>(
      "lightning_attn::fwd");
  return handle.call(q, k, v, slope, scale, initial_state, cu_seqlens, head_first, output_final_state);
}

at::Tensor forward_slots(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& state_pool,
                         const at::Tensor& slot_ids, OptT slope, double scale, OptT cu_seqlens, bool head_first) {
  static const auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, OptT, double,
                                           at::Tensor&, const at::Tensor&, OptT, bool)>("lightning_attn::fwd_slots");
  return handle.call(q, k, v, slope, scale, state_pool, slot_ids, cu_seqlens, head_first);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> forward_checkpoints(const at::Tensor& q, const at::Tensor& k,
                                                                   const at::Tensor& v, int64_t checkpoint_every,
                                                                   int64_t num_checkpoints, OptT slope, double scale,
                                                                   OptT initial_state, OptT cu_seqlens,
                                                                   bool head_first) {
  static const auto handle = op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, OptT, double, OptT, OptT, bool, int64_t, c10::SymInt)>(
      "lightning_attn::fwd_checkpoints");
  return handle.call(q, k, v, slope, scale, initial_state, cu_seqlens, head_first, checkpoint_every,
                     c10::SymInt(num_checkpoints));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward(
    const at::Tensor& dout, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, OptT slope,
    double scale, OptT initial_state, OptT d_final_state, OptT cu_seqlens, bool head_first) {
  static const auto handle = op<std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, OptT, double, OptT, OptT,
      OptT, bool)>("lightning_attn::bwd");
  return handle.call(dout, q, k, v, slope, scale, initial_state, d_final_state, cu_seqlens, head_first);
}

at::Tensor decode(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, at::Tensor& state,
                  OptT slope, double scale) {
  static const auto handle =
      op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, OptT, double)>(
          "lightning_attn::decode");
  return handle.call(q, k, v, state, slope, scale);
}

std::tuple<at::Tensor, at::Tensor> decode_tokens(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                 at::Tensor& state, OptT slope, double scale, OptT slot_ids,
                                                 OptT num_accepted, bool output_states) {
  static const auto handle = op<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, at::Tensor&, OptT, double, OptT, OptT, bool)>(
      "lightning_attn::decode_tokens");
  return handle.call(q, k, v, state, slope, scale, slot_ids, num_accepted, output_states);
}

std::tuple<at::Tensor, at::Tensor> srms_norm_forward(const at::Tensor& x, double eps) {
  static const auto handle =
      op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, double)>("lightning_attn::srms_norm_fwd");
  return handle.call(x, eps);
}

at::Tensor srms_norm_backward(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& rstd) {
  static const auto handle = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&)>(
      "lightning_attn::srms_norm_bwd");
  return handle.call(dy, x, rstd);
}

}  // namespace lightning_attn
