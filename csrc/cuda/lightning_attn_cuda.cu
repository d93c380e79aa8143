// CUDA entry points of the lightning attention ops and their registration: argument
// checks (shared with the CPU and Meta kernels), device guard, current stream, outputs,
// and the mapping of each op onto generic problems (problem.h). No host synchronisation.
#include <tuple>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "context.h"
#include "dispatch.h"
#include "launch.h"
#include "params_builder.h"
#include "problem.h"
#include "torch_cuda_headers.h"

namespace lightning_attn {
namespace {

using at::Tensor;
using cuda::Problem;

void check_cuda_dtype(const Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.scalar_type() != at::kDouble, "lightning_attn", op,
                    ": float64 is supported on the CPU only; use float32, float16 or bfloat16 on CUDA");
}

// What every forward entry point sets up once its inputs are checked: the device guard, the
// current stream, the call context, the output o and the forward as one generic problem
// (params.h) writing it: o = scale (mask(q k^T) v + decayed state^T q). The entry point adds
// its states to pb, then run().
struct ForwardCall {
  c10::cuda::CUDAGuard guard;
  cudaStream_t stream;
  cuda::CallContext ctx;
  Tensor o_user;
  Problem pb;

  ForwardCall(const AttnDims& d, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
              const std::optional<Tensor>& slope, double scale, const std::optional<Tensor>& cu_seqlens,
              bool head_first)
      : guard(q_in.device()),
        stream(c10::cuda::getCurrentCUDAStream()),
        ctx(cuda::make_context(d, slope, cu_seqlens)),
        o_user(at::empty(user_shape(d, d.Dv, head_first), q_in.options())) {
    pb.q = canonical(q_in, head_first);
    pb.k = canonical(k_in, head_first);
    pb.v = canonical(v_in, head_first);
    pb.o = canonical(o_user, head_first);
    pb.scale_intra = float(scale), pb.scale_state = float(scale), pb.scale_upd = 1.f;
    pb.qoff = 1, pb.koff = 0, pb.reverse = false;
  }
  void run() const { cuda::run_problem(pb, ctx, stream); }
};

std::tuple<Tensor, Tensor> fwd_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const std::optional<Tensor>& slope, double scale,
                                    const std::optional<Tensor>& initial_state,
                                    const std::optional<Tensor>& cu_seqlens, bool head_first,
                                    bool output_final_state) {
  const AttnDims d = check_fwd_inputs(q_in, k_in, v_in, slope, initial_state, cu_seqlens, head_first);
  check_cuda_dtype(q_in, "");
  ForwardCall f(d, q_in, k_in, v_in, slope, scale, cu_seqlens, head_first);
  const Tensor final_state = empty_state(d, output_final_state, q_in.options());
  if (initial_state.has_value()) f.pb.init = *initial_state;
  if (output_final_state) f.pb.final_state = final_state;
  f.run();
  return {f.o_user, final_state};
}

// The forward whose sweeps also store the state at every checkpoint they pass (one pass over q,
// k, v); run_problem then gives the checkpoints past each sequence's end its final state.
std::tuple<Tensor, Tensor, Tensor> fwd_checkpoints_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                                        const std::optional<Tensor>& slope, double scale,
                                                        const std::optional<Tensor>& initial_state,
                                                        const std::optional<Tensor>& cu_seqlens, bool head_first,
                                                        int64_t checkpoint_every, int64_t num_checkpoints) {
  const AttnDims d = check_fwd_checkpoints_inputs(q_in, k_in, v_in, slope, initial_state, cu_seqlens, head_first,
                                                  checkpoint_every, num_checkpoints);
  check_cuda_dtype(q_in, "");
  ForwardCall f(d, q_in, k_in, v_in, slope, scale, cu_seqlens, head_first);
  const Tensor final_state = empty_state(d, true, q_in.options());
  const Tensor ckpt = at::empty({d.N, num_checkpoints, d.H, d.Dk, d.Dv}, q_in.options().dtype(at::kFloat));
  if (initial_state.has_value()) f.pb.init = *initial_state;
  f.pb.final_state = final_state;
  if (num_checkpoints > 0) f.pb.checkpoints = ckpt, f.pb.checkpoint_every = checkpoint_every;
  f.run();
  return {f.o_user, final_state, ckpt};
}

// The forward from and into rows of a state pool: the pool is both the initial and the final
// state of the problem, read and written through slot_ids by the kernels (problem.h).
Tensor fwd_slots_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in, const std::optional<Tensor>& slope,
                      double scale, Tensor& state, const Tensor& slot_ids, const std::optional<Tensor>& cu_seqlens,
                      bool head_first) {
  const AttnDims d = check_fwd_slots_inputs(q_in, k_in, v_in, slope, state, slot_ids, cu_seqlens, head_first);
  check_cuda_dtype(q_in, "");
  ForwardCall f(d, q_in, k_in, v_in, slope, scale, cu_seqlens, head_first);
  f.pb.init = state, f.pb.final_state = state;
  f.pb.state_rows = slot_ids.contiguous();
  f.run();
  return f.o_user;
}

// The backward as generic problems (params.h), with S the forward state and dS its
// gradient (dS entering from the end is d_final_state):
//   dq: forward time,  (q, k, v) = (do, v, k),  R = S^T,  scales (scale, scale, 1), qoff 1, koff 0
//   dk: reversed time, (q, k, v) = (v, do, q),  R = dS^T, scales (scale, 1, scale), qoff 0, koff 1
//   dv: reversed time, (q, k, v) = (k, q, do),  R = dS,   same scales; its final R is d_initial_state.
// Where fused_dkdv holds, dk and dv come from one fused reversed sweep instead.
std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_cuda(
    const Tensor& do_in, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const std::optional<Tensor>& slope, double scale, const std::optional<Tensor>& initial_state,
    const std::optional<Tensor>& d_final_state, const std::optional<Tensor>& cu_seqlens,
    bool head_first) {
  const AttnDims d = check_fwd_inputs(q_in, k_in, v_in, slope, initial_state, cu_seqlens, head_first);
  check_bwd_inputs(do_in, v_in, d, d_final_state, head_first);
  check_cuda_dtype(q_in, "");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const cuda::CallContext c = cuda::make_context(d, slope, cu_seqlens);

  const Tensor q = canonical(q_in, head_first), k = canonical(k_in, head_first),
               v = canonical(v_in, head_first), dout = canonical(do_in, head_first);
  const Tensor dq_user = at::empty(user_shape(d, d.Dk, head_first), q_in.options()),
               dk_user = at::empty(user_shape(d, d.Dk, head_first), q_in.options()),
               dv_user = at::empty(user_shape(d, d.Dv, head_first), q_in.options());
  const Tensor dk = canonical(dk_user, head_first), dv = canonical(dv_user, head_first);
  const Tensor d_initial = empty_state(d, initial_state.has_value(), q_in.options());
  const Tensor ds_final = d_final_state.has_value() ? *d_final_state : Tensor();
  const float s = float(scale);
  {
    Problem pb;
    pb.q = dout, pb.k = v, pb.v = k, pb.o = canonical(dq_user, head_first);
    pb.scale_intra = s, pb.scale_state = s, pb.scale_upd = 1.f, pb.qoff = 1, pb.koff = 0;
    if (initial_state.has_value()) pb.init = initial_state->transpose(2, 3);
    cuda::run_problem(pb, c, stream);
  }
  if (cuda::fused_dkdv(q.scalar_type(), d.Dk, d.Dv, c)) {
    cuda::run_dkdv(q, k, v, dout, dk, dv, s, ds_final, initial_state.has_value() ? d_initial : Tensor(), c, stream);
    return {dq_user, dk_user, dv_user, d_initial};
  }
  {
    Problem pb;
    pb.q = v, pb.k = dout, pb.v = q, pb.o = dk;
    pb.scale_intra = s, pb.scale_state = 1.f, pb.scale_upd = s, pb.qoff = 0, pb.koff = 1;
    pb.reverse = true;
    if (ds_final.defined()) pb.init = ds_final.transpose(2, 3);
    cuda::run_problem(pb, c, stream);
  }
  {
    Problem pb;
    pb.q = k, pb.k = q, pb.v = dout, pb.o = dv;
    pb.scale_intra = s, pb.scale_state = 1.f, pb.scale_upd = s, pb.qoff = 0, pb.koff = 1;
    pb.reverse = true;
    pb.init = ds_final;
    if (initial_state.has_value()) pb.final_state = d_initial;
    cuda::run_problem(pb, c, stream);
  }
  return {dq_user, dk_user, dv_user, d_initial};
}

Tensor decode_cuda(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& state,
                   const std::optional<Tensor>& slope, double scale) {
  check_decode_inputs(q, k, v, state, slope);
  check_cuda_dtype(q, ".decode");
  const c10::cuda::CUDAGuard guard(q.device());
  (void)cuda::current_device_info();  // raises where this build has no kernel for the GPU
  Tensor o = at::empty({q.size(0), q.size(1), v.size(2)}, q.options());
  const Tensor slope_f = slope.has_value() ? slope->to(at::kFloat).contiguous() : Tensor();
  const cuda::DecodeParams p = cuda::decode_params(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), o, state,
                                                   slope_f.defined() ? slope_f.data_ptr<float>() : nullptr, float(scale));
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  LIGHTNING_ATTN_DTYPE_SWITCH(q.scalar_type(), [&] { cuda::launch_decode<scalar_t>(p, stream); });
  return o;
}

// Slot ids outside [0, num_slots) skip their sequence and num_accepted is clamped to [0, K]:
// checking the values would need a host synchronisation.
std::tuple<Tensor, Tensor> decode_tokens_cuda(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& state,
                                              const std::optional<Tensor>& slope, double scale,
                                              const std::optional<Tensor>& slot_ids,
                                              const std::optional<Tensor>& num_accepted, bool output_states) {
  check_decode_tokens_inputs(q, k, v, state, slope, slot_ids, num_accepted, output_states);
  check_cuda_dtype(q, ".decode_tokens");
  const c10::cuda::CUDAGuard guard(q.device());
  (void)cuda::current_device_info();
  Tensor o = at::empty({q.size(0), q.size(1), q.size(2), v.size(3)}, q.options());
  Tensor states = output_states ? at::empty({q.size(0), q.size(1), q.size(2), q.size(3), v.size(3)}, state.options())
                                : at::empty({0}, state.options());
  const Tensor slope_f = slope.has_value() ? slope->to(at::kFloat).contiguous() : Tensor();
  const Tensor slots = slot_ids.has_value() ? slot_ids->contiguous() : Tensor();
  const Tensor accepted = num_accepted.has_value() ? num_accepted->to(at::kInt).contiguous() : Tensor();
  cuda::DecodeParams p = cuda::decode_params(q, k, v, o, state, slope_f.defined() ? slope_f.data_ptr<float>() : nullptr,
                                             float(scale));
  p.slot_ids = slots.defined() ? slots.data_ptr<int32_t>() : nullptr;
  p.num_accepted = accepted.defined() ? accepted.data_ptr<int32_t>() : nullptr;
  p.advance_all = !output_states;
  p.states = output_states ? states.data_ptr<float>() : nullptr;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  LIGHTNING_ATTN_DTYPE_SWITCH(q.scalar_type(), [&] { cuda::launch_decode<scalar_t>(p, stream); });
  return {o, states};
}

}  // namespace

TORCH_LIBRARY_IMPL(lightning_attn, CUDA, m) {
  m.impl("fwd", &fwd_cuda);
  m.impl("fwd_slots", &fwd_slots_cuda);
  m.impl("fwd_checkpoints", &fwd_checkpoints_cuda);
  m.impl("bwd", &bwd_cuda);
  m.impl("decode", &decode_cuda);
  m.impl("decode_tokens", &decode_tokens_cuda);
}

}  // namespace lightning_attn
