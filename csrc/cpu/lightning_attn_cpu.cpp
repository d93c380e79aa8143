// CPU kernels of lightning attention: chunked forward, backward, decoding step.
//
// Each (sequence, head) is one task for at::parallel_for. Inside a task the
// sequence is cut into chunks of kChunk tokens: masked attention inside a chunk,
// the [Dk, Dv] state carried between chunks. Block products go to BLAS through
// at::mm / addmm on float32 (float64 for float64 inputs) copies of the chunk.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../checks.h"
#include "cpu_guard.h"

namespace lightning_attn {
namespace {

using at::Tensor;

// 64 balances the quadratic intra-chunk work (grows with C) against BLAS call
// overhead per chunk; 32 and 128 were both slower at Dk = Dv = 128.
constexpr int64_t kChunk = 64;

struct SeqRange {
  int64_t b, t0, len;  // batch row, first token, number of tokens
};

std::vector<SeqRange> sequence_ranges(const AttnDims& d, const std::optional<Tensor>& cu_seqlens) {
  std::vector<SeqRange> ranges;
  ranges.reserve(d.N);
  if (!d.varlen) {
    for (int64_t b = 0; b < d.B; ++b) ranges.push_back({b, 0, d.T});
    return ranges;
  }
  const Tensor cu = cu_seqlens->to(at::kLong).contiguous();
  const int64_t* c = cu.data_ptr<int64_t>();
  for (int64_t n = 0; n < d.N; ++n) ranges.push_back({0, c[n], c[n + 1] - c[n]});
  return ranges;
}

// log(lambda_h) = -slope_h per head; 0 (lambda = 1) without decay.
std::vector<double> log_lambdas(const std::optional<Tensor>& slope, int64_t H) {
  std::vector<double> out(H, 0.0);
  if (slope.has_value()) {
    const Tensor s = slope->to(at::kDouble).contiguous();
    for (int64_t h = 0; h < H; ++h) out[h] = -s.data_ptr<double>()[h];
  }
  return out;
}

// Decay tables of one head for a chunk of kChunk rows, in the accumulation dtype.
struct DecayTables {
  Tensor mask;     // [C, C]: lambda^(r - s) for r >= s, else 0
  Tensor q_decay;  // [C, 1]: lambda^(r + 1), weight of the incoming state for row r
  Tensor k_decay;  // [C, 1]: lambda^(C - 1 - s); a chunk of c rows uses the last c entries
  double log_lambda;

  DecayTables(double log_lambda, at::ScalarType acc) : log_lambda(log_lambda) {
    const auto opts = at::TensorOptions().dtype(at::kDouble);
    const Tensor r = at::arange(kChunk, opts);
    const Tensor diff = r.unsqueeze(1) - r.unsqueeze(0);
    mask = at::where(diff >= 0, at::exp(diff * log_lambda), at::zeros({}, opts)).to(acc);
    q_decay = at::exp((r + 1) * log_lambda).unsqueeze(1).to(acc);
    k_decay = at::exp((kChunk - 1 - r) * log_lambda).unsqueeze(1).to(acc);
  }
  Tensor mask_for(int64_t c) const { return mask.narrow(0, 0, c).narrow(1, 0, c); }
  Tensor q_decay_for(int64_t c) const { return q_decay.narrow(0, 0, c); }
  Tensor k_decay_for(int64_t c) const { return k_decay.narrow(0, kChunk - c, c); }
  double chunk_decay(int64_t c) const { return std::exp(log_lambda * c); }
};

// Where a forward keeps its checkpoints: ckpt [N, J, H, Dk, Dv], the state after every `every`
// tokens (a multiple of kChunk) of each sequence; undefined for none.
struct Checkpoints {
  Tensor ckpt;
  int64_t every = 0;
};

// Forward of one (sequence, head). q, k: [len, Dk], v, o: [len, Dv] strided views;
// S: [Dk, Dv] in the accumulation dtype, the initial state in, the final state out.
// ckpt: this (sequence, head)'s checkpoints [J, Dk, Dv] or undefined.
void fwd_sequence(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o, Tensor& S,
                  const DecayTables& dt, double scale, const Tensor& ckpt = Tensor(), int64_t every = 0) {
  const auto acc = S.scalar_type();
  const Tensor qf = q.to(acc).contiguous(), kf = k.to(acc).contiguous(), vf = v.to(acc).contiguous();
  Tensor of = at::empty(o.sizes(), o.options().dtype(acc));
  const int64_t len = q.size(0);
  for (int64_t t = 0; t < len; t += kChunk) {
    const int64_t c = std::min(kChunk, len - t);
    const Tensor Q = qf.narrow(0, t, c), K = kf.narrow(0, t, c), V = vf.narrow(0, t, c);
    Tensor O = of.narrow(0, t, c);
    const Tensor A = at::mm(Q, K.t()).mul_(dt.mask_for(c));  // [c, c]
    at::mm_out(O, A, V);
    O.addmm_(Q * dt.q_decay_for(c), S).mul_(scale);
    S.addmm_((K * dt.k_decay_for(c)).t(), V, /*beta=*/dt.chunk_decay(c));
    if (ckpt.defined() && (t + c) % every == 0 && (t + c) / every <= ckpt.size(0)) ckpt[(t + c) / every - 1].copy_(S);
  }
  o.copy_(of);
}

// Backward of one (sequence, head). S: the initial state; dS: the gradient of the
// final state in, of the initial state out. dq, dk, dv: output views like q, k, v.
void bwd_sequence(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                  const Tensor& dq, const Tensor& dk, const Tensor& dv, Tensor S, Tensor& dS,
                  const DecayTables& dt, double scale) {
  const auto acc = S.scalar_type();
  const Tensor qf = q.to(acc).contiguous(), kf = k.to(acc).contiguous(),
               vf = v.to(acc).contiguous(), dof = dout.to(acc).contiguous();
  Tensor dqf = at::empty(qf.sizes(), qf.options()), dkf = at::empty(kf.sizes(), kf.options()),
         dvf = at::empty(vf.sizes(), vf.options());
  const int64_t len = q.size(0);

  // dQ needs the state before each chunk: a forward sweep.
  for (int64_t t = 0; t < len; t += kChunk) {
    const int64_t c = std::min(kChunk, len - t);
    const Tensor Q = qf.narrow(0, t, c), K = kf.narrow(0, t, c), V = vf.narrow(0, t, c),
                 dO = dof.narrow(0, t, c);
    Tensor dQ = dqf.narrow(0, t, c);
    const Tensor dP = at::mm(dO, V.t()).mul_(dt.mask_for(c));  // [c, c]
    at::mm_out(dQ, dP, K);
    dQ.addmm_(dO * dt.q_decay_for(c), S.t()).mul_(scale);
    S.addmm_((K * dt.k_decay_for(c)).t(), V, /*beta=*/dt.chunk_decay(c));
  }
  // dK, dV need the gradient of the state after each chunk: a reverse sweep.
  const int64_t last = ((len - 1) / kChunk) * kChunk;
  for (int64_t t = last; t >= 0; t -= kChunk) {
    const int64_t c = std::min(kChunk, len - t);
    const Tensor Q = qf.narrow(0, t, c), K = kf.narrow(0, t, c), V = vf.narrow(0, t, c),
                 dO = dof.narrow(0, t, c);
    Tensor dK = dkf.narrow(0, t, c), dV = dvf.narrow(0, t, c);
    const Tensor mask = dt.mask_for(c), kd = dt.k_decay_for(c);
    const Tensor A = at::mm(Q, K.t()).mul_(mask);     // A[r, s] = lambda^(r-s) q_r . k_s
    const Tensor dP = at::mm(dO, V.t()).mul_(mask);   // dP[r, s] = lambda^(r-s) do_r . v_s
    at::mm_out(dV, A.t(), dO);
    dV.mul_(scale).addmm_(K * kd, dS);
    at::mm_out(dK, dP.t(), Q);
    dK.mul_(scale).addmm_(V * kd, dS.t());
    dS.addmm_((Q * dt.q_decay_for(c)).t(), dO, /*beta=*/dt.chunk_decay(c), /*alpha=*/scale);
  }
  dq.copy_(dqf);
  dk.copy_(dkf);
  dv.copy_(dvf);
}

// Runs fn(n, h, range, tables) for every (sequence, head) in parallel.
template <typename Fn>
void for_each_sequence_head(const AttnDims& d, const std::optional<Tensor>& slope,
                            const std::optional<Tensor>& cu_seqlens, const Fn& fn) {
  const auto ranges = sequence_ranges(d, cu_seqlens);
  const auto logs = log_lambdas(slope, d.H);
  at::parallel_for(0, d.N * d.H, 1, [&](int64_t begin, int64_t end) {
    const CpuKernelGuard guard;  // worker threads do not inherit the caller's
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / d.H, h = task % d.H;
      fn(n, h, ranges[n], DecayTables(logs[h], d.state_dtype));
    }
  });
}

// [len, D] view of one sequence of one head in a canonical [B, T, H, D] tensor.
Tensor seq_view(const Tensor& x, const SeqRange& r, int64_t h) {
  return x.select(0, r.b).narrow(0, r.t0, r.len).select(1, h);
}

// fwd (and fwd_checkpoints with cp.ckpt defined) on checked inputs of sizes d.
std::tuple<Tensor, Tensor> fwd_checked(const AttnDims& d, const Tensor& q_in, const Tensor& k_in,
                                       const Tensor& v_in, const std::optional<Tensor>& slope, double scale,
                                       const std::optional<Tensor>& initial_state,
                                       const std::optional<Tensor>& cu_seqlens, bool head_first,
                                       bool output_final_state, const Checkpoints& cp = {}) {
  const Tensor q = canonical(q_in, head_first), k = canonical(k_in, head_first),
               v = canonical(v_in, head_first);
  const Tensor o_user = at::empty(user_shape(d, d.Dv, head_first), q.options());
  const Tensor o = canonical(o_user, head_first);
  const auto state_opts = q.options().dtype(d.state_dtype);
  const Tensor final_state = empty_state(d, output_final_state, q.options());
  for_each_sequence_head(d, slope, cu_seqlens, [&](int64_t n, int64_t h, const SeqRange& r,
                                                   const DecayTables& dt) {
    Tensor S = initial_state.has_value() ? (*initial_state)[n][h].clone()
                                         : at::zeros({d.Dk, d.Dv}, state_opts);
    const Tensor ckpt = cp.ckpt.defined() ? cp.ckpt.select(0, n).select(1, h) : Tensor();
    if (r.len > 0) {
      fwd_sequence(seq_view(q, r, h), seq_view(k, r, h), seq_view(v, r, h), seq_view(o, r, h), S,
                   dt, scale, ckpt, cp.every);
    }
    if (output_final_state) final_state[n][h].copy_(S);
    if (ckpt.defined()) {  // the checkpoints the sequence ends before: its final state
      for (int64_t j = r.len / cp.every; j < ckpt.size(0); ++j) ckpt[j].copy_(S);
    }
  });
  return {o_user, final_state};
}

std::tuple<Tensor, Tensor> fwd_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                                   const std::optional<Tensor>& slope, double scale,
                                   const std::optional<Tensor>& initial_state,
                                   const std::optional<Tensor>& cu_seqlens, bool head_first,
                                   bool output_final_state) {
  const CpuKernelGuard guard;
  const AttnDims d = check_fwd_inputs(q, k, v, slope, initial_state, cu_seqlens, head_first);
  return fwd_checked(d, q, k, v, slope, scale, initial_state, cu_seqlens, head_first, output_final_state);
}

std::tuple<Tensor, Tensor, Tensor> fwd_checkpoints_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                                                       const std::optional<Tensor>& slope, double scale,
                                                       const std::optional<Tensor>& initial_state,
                                                       const std::optional<Tensor>& cu_seqlens, bool head_first,
                                                       int64_t checkpoint_every, int64_t num_checkpoints) {
  const CpuKernelGuard guard;
  const AttnDims d = check_fwd_checkpoints_inputs(q, k, v, slope, initial_state, cu_seqlens, head_first,
                                                  checkpoint_every, num_checkpoints);
  const Checkpoints cp{at::empty({d.N, num_checkpoints, d.H, d.Dk, d.Dv}, q.options().dtype(d.state_dtype)),
                       checkpoint_every};
  auto [o, final_state] = fwd_checked(d, q, k, v, slope, scale, initial_state, cu_seqlens, head_first, true, cp);
  return {o, final_state, cp.ckpt};
}

// The pool rows of slot_ids as initial states (zeros for -1), fwd, and the final states written
// back into the same rows. The CPU reference of fwd_slots: it copies, the CUDA kernels do not.
Tensor fwd_slots_cpu(const Tensor& q, const Tensor& k, const Tensor& v, const std::optional<Tensor>& slope,
                     double scale, Tensor& state, const Tensor& slot_ids, const std::optional<Tensor>& cu_seqlens,
                     bool head_first) {
  check_fwd_slots_inputs(q, k, v, slope, state, slot_ids, cu_seqlens, head_first);
  check_slot_ids_values(slot_ids, state.size(0), "lightning_attn");
  const Tensor ids = slot_ids.to(at::kLong);
  const Tensor used = ids.ge(0).nonzero().squeeze(1);  // the sequences that own a slot
  const Tensor rows = ids.index_select(0, used);
  Tensor init = at::zeros({ids.size(0), state.size(1), state.size(2), state.size(3)}, state.options());
  init.index_copy_(0, used, state.index_select(0, rows));
  auto [o, final_state] = fwd_cpu(q, k, v, slope, scale, init, cu_seqlens, head_first, true);
  state.index_copy_(0, rows, final_state.index_select(0, used));
  return o;
}

std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_cpu(
    const Tensor& do_in, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const std::optional<Tensor>& slope, double scale, const std::optional<Tensor>& initial_state,
    const std::optional<Tensor>& d_final_state, const std::optional<Tensor>& cu_seqlens,
    bool head_first) {
  const CpuKernelGuard guard;
  const AttnDims d = check_fwd_inputs(q_in, k_in, v_in, slope, initial_state, cu_seqlens, head_first);
  check_bwd_inputs(do_in, v_in, d, d_final_state, head_first);
  const Tensor q = canonical(q_in, head_first), k = canonical(k_in, head_first),
               v = canonical(v_in, head_first), dout = canonical(do_in, head_first);
  const Tensor dq_user = at::empty(user_shape(d, d.Dk, head_first), q.options()),
               dk_user = at::empty(user_shape(d, d.Dk, head_first), q.options()),
               dv_user = at::empty(user_shape(d, d.Dv, head_first), q.options());
  const Tensor dq = canonical(dq_user, head_first), dk = canonical(dk_user, head_first),
               dv = canonical(dv_user, head_first);
  const auto state_opts = q.options().dtype(d.state_dtype);
  const Tensor d_initial = empty_state(d, initial_state.has_value(), q.options());
  for_each_sequence_head(d, slope, cu_seqlens, [&](int64_t n, int64_t h, const SeqRange& r,
                                                   const DecayTables& dt) {
    Tensor S = initial_state.has_value() ? (*initial_state)[n][h].clone()
                                         : at::zeros({d.Dk, d.Dv}, state_opts);
    Tensor dS = d_final_state.has_value() ? (*d_final_state)[n][h].clone()
                                          : at::zeros({d.Dk, d.Dv}, state_opts);
    if (r.len > 0) {
      bwd_sequence(seq_view(q, r, h), seq_view(k, r, h), seq_view(v, r, h), seq_view(dout, r, h),
                   seq_view(dq, r, h), seq_view(dk, r, h), seq_view(dv, r, h), S, dS, dt, scale);
    }
    if (initial_state.has_value()) d_initial[n][h].copy_(dS);
  });
  return {dq_user, dk_user, dv_user, d_initial};
}

Tensor decode_cpu(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& state,
                  const std::optional<Tensor>& slope, double scale) {
  const CpuKernelGuard guard;
  check_decode_inputs(q, k, v, state, slope);
  const auto acc = state.scalar_type();
  const Tensor kf = k.to(acc), vf = v.to(acc), qf = q.to(acc);
  if (slope.has_value()) state.mul_(at::exp(-slope->to(acc)).view({1, -1, 1, 1}));
  state.add_(kf.unsqueeze(-1) * vf.unsqueeze(-2));                   // S += k v^T
  const Tensor o = at::matmul(qf.unsqueeze(-2), state).squeeze(-2);  // [B, H, Dv]
  return o.mul_(scale).to(q.scalar_type());
}

// Sequence by sequence, token by token, in the state dtype: the contract written plainly.
std::tuple<Tensor, Tensor> decode_tokens_cpu(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& state,
                                             const std::optional<Tensor>& slope, double scale,
                                             const std::optional<Tensor>& slot_ids,
                                             const std::optional<Tensor>& num_accepted, bool output_states) {
  const CpuKernelGuard guard;
  check_decode_tokens_inputs(q, k, v, state, slope, slot_ids, num_accepted, output_states);
  const int64_t B = q.size(0), K = q.size(1), H = q.size(2), Dk = q.size(3), Dv = v.size(3);
  check_decode_tokens_values(slot_ids, state.size(0), num_accepted, K);
  const auto acc = state.scalar_type();
  const Tensor qf = q.to(acc), kf = k.to(acc), vf = v.to(acc);
  const Tensor lambda = slope.has_value() ? at::exp(-slope->to(acc)).view({H, 1, 1}) : at::ones({H, 1, 1}, state.options());
  Tensor o = at::zeros({B, K, H, Dv}, qf.options());
  Tensor states = output_states ? at::zeros({B, K, H, Dk, Dv}, state.options()) : at::empty({0}, state.options());
  const Tensor slots = slot_ids.has_value() ? slot_ids->to(at::kLong) : at::arange(B, at::kLong);
  const Tensor accepted = num_accepted.has_value() ? num_accepted->to(at::kLong) : Tensor();
  for (int64_t b = 0; b < B; ++b) {
    const int64_t row = slots[b].item<int64_t>();
    if (row < 0) continue;
    const int64_t advance = accepted.defined() ? accepted[b].item<int64_t>() : (output_states ? 0 : K);
    Tensor S = state[row].clone();  // [H, Dk, Dv]
    for (int64_t t = 0; t < K; ++t) {
      S = lambda * S + kf[b][t].unsqueeze(-1) * vf[b][t].unsqueeze(-2);
      o[b][t].copy_(at::matmul(qf[b][t].unsqueeze(-2), S).squeeze(-2));
      if (output_states) states[b][t].copy_(S);
      if (t + 1 == advance) state[row].copy_(S);
    }
  }
  return {o.mul_(scale).to(q.scalar_type()), states};
}

}  // namespace

TORCH_LIBRARY_IMPL(lightning_attn, CPU, m) {
  m.impl("fwd", &fwd_cpu);
  m.impl("fwd_slots", &fwd_slots_cpu);
  m.impl("fwd_checkpoints", &fwd_checkpoints_cpu);
  m.impl("bwd", &bwd_cpu);
  m.impl("decode", &decode_cpu);
  m.impl("decode_tokens", &decode_tokens_cpu);
}

}  // namespace lightning_attn
