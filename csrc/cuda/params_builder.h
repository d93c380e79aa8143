// Params structs from tensors: one builder per struct (params.h). Operands are canonical
// [B, T, H, D] views with a unit last stride (checks.cpp guarantees it).
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "context.h"
#include "params.h"
#include "problem.h"

namespace lightning_attn {
namespace cuda {

// 16-byte loads are legal: the base is 16-byte aligned and every stride a multiple of 16 bytes.
inline bool vec16_ok(const at::Tensor& x) {
  const int64_t a = int64_t(16 / x.element_size());
  const bool base = reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0;
  return x.numel() == 0 || (base && x.stride(0) % a == 0 && x.stride(1) % a == 0 && x.stride(2) % a == 0);
}

// 2-element stores are legal.
inline bool vec2_ok(const at::Tensor& x) {
  const size_t bytes = 2 * x.element_size();
  return reinterpret_cast<uintptr_t>(x.data_ptr()) % bytes == 0 && x.stride(0) % 2 == 0 &&
         x.stride(1) % 2 == 0 && x.stride(2) % 2 == 0;
}

// A [N, H, Dk, Dv] fp32 state tensor (any strides), or null for an undefined one. With rows
// (int32 [N], on the device): s is a pool [num_slots, H, Dk, Dv] and sequence n's state is
// its row rows[n].
inline StateRef state_ref(const at::Tensor& s, const at::Tensor& rows = at::Tensor()) {
  StateRef r;
  if (!s.defined()) return r;
  r.ptr = s.data_ptr<float>();
  r.sn = s.stride(0), r.sh = s.stride(1), r.sk = s.stride(2), r.sv = s.stride(3);
  if (rows.defined()) r.rows = rows.data_ptr<int32_t>(), r.nrows = s.size(0);
  return r;
}

// Checkpoints [N, J, H, Dk, Dv] fp32 (any strides), or null: checkpoint j of (n, h) at at(j, n, h).
inline StateRef checkpoint_ref(const at::Tensor& c) {
  StateRef r;
  if (!c.defined()) return r;
  r.ptr = c.data_ptr<float>();
  r.sn = c.stride(0), r.sseg = c.stride(1), r.sh = c.stride(2), r.sk = c.stride(3), r.sv = c.stride(4);
  return r;
}

// The problem's params without a split (seg_len, nseg, states: set by the runner).
inline ChunkParams chunk_params(const Problem& pb, const CallContext& c) {
  ChunkParams p{};
  p.q = pb.q.data_ptr();
  p.k = pb.k.data_ptr();
  p.v = pb.v.data_ptr();
  p.o = pb.o.data_ptr();
  p.q_sb = pb.q.stride(0), p.q_st = pb.q.stride(1), p.q_sh = pb.q.stride(2);
  p.k_sb = pb.k.stride(0), p.k_st = pb.k.stride(1), p.k_sh = pb.k.stride(2);
  p.v_sb = pb.v.stride(0), p.v_st = pb.v.stride(1), p.v_sh = pb.v.stride(2);
  p.o_sb = pb.o.stride(0), p.o_st = pb.o.stride(1), p.o_sh = pb.o.stride(2);
  p.q_vec = vec16_ok(pb.q), p.k_vec = vec16_ok(pb.k), p.v_vec = vec16_ok(pb.v);
  p.o_vec2 = vec2_ok(pb.o), p.o_vec = vec16_ok(pb.o);
  p.Dk = int(pb.q.size(3));
  p.Dv = int(pb.v.size(3));
  p.H = int(c.H), p.N = int(c.N), p.T = c.T;
  p.cu32 = c.cu32, p.cu64 = c.cu64, p.slope = c.slope;
  p.scale_intra = pb.scale_intra, p.scale_state = pb.scale_state, p.scale_upd = pb.scale_upd;
  p.qoff = pb.qoff, p.koff = pb.koff, p.reverse = pb.reverse;
  p.o_accumulate = pb.accumulate;
  p.ckpt = checkpoint_ref(pb.checkpoints);
  p.ckpt_every = pb.checkpoint_every;
  p.nckpt = pb.checkpoints.defined() ? pb.checkpoints.size(1) : 0;
  return p;
}

// The fused dk/dv sweep's params without a split.
inline DkDvParams dkdv_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
                              const at::Tensor& dk, const at::Tensor& dv, float scale, const CallContext& c) {
  DkDvParams p{};
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.dout = dout.data_ptr();
  p.dk = dk.data_ptr(), p.dv = dv.data_ptr();
  p.q_sb = q.stride(0), p.q_st = q.stride(1), p.q_sh = q.stride(2);
  p.k_sb = k.stride(0), p.k_st = k.stride(1), p.k_sh = k.stride(2);
  p.v_sb = v.stride(0), p.v_st = v.stride(1), p.v_sh = v.stride(2);
  p.do_sb = dout.stride(0), p.do_st = dout.stride(1), p.do_sh = dout.stride(2);
  p.dk_sb = dk.stride(0), p.dk_st = dk.stride(1), p.dk_sh = dk.stride(2);
  p.dv_sb = dv.stride(0), p.dv_st = dv.stride(1), p.dv_sh = dv.stride(2);
  p.q_vec = vec16_ok(q), p.k_vec = vec16_ok(k), p.v_vec = vec16_ok(v), p.do_vec = vec16_ok(dout);
  p.dk_vec2 = vec2_ok(dk), p.dv_vec2 = vec2_ok(dv);
  p.Dk = int(q.size(3)), p.Dv = int(dout.size(3)), p.H = int(c.H), p.N = int(c.N), p.T = c.T;
  p.cu32 = c.cu32, p.cu64 = c.cu64, p.slope = c.slope, p.scale = scale;
  return p;
}

// The state problem of the dk/dv sweep's split: dS is the reversed-time state of (k, v) =
// (q, do), koff 1, updates scaled by scale (pass 1 and the scan only: no q, no o).
inline ChunkParams dkdv_state_params(const at::Tensor& q, const at::Tensor& dout, float scale, const CallContext& c) {
  ChunkParams p{};
  p.k = q.data_ptr(), p.v = dout.data_ptr();
  p.k_sb = q.stride(0), p.k_st = q.stride(1), p.k_sh = q.stride(2);
  p.v_sb = dout.stride(0), p.v_st = dout.stride(1), p.v_sh = dout.stride(2);
  p.k_vec = vec16_ok(q), p.v_vec = vec16_ok(dout);
  p.Dk = int(q.size(3)), p.Dv = int(dout.size(3));
  p.H = int(c.H), p.N = int(c.N), p.T = c.T;
  p.cu32 = c.cu32, p.cu64 = c.cu64, p.slope = c.slope;
  p.scale_upd = scale, p.koff = 1, p.reverse = true;
  return p;
}

// One decoding step: q, k [B, H, Dk], v [B, H, Dv], o [B, H, Dv], state [B, H, Dk, Dv] contiguous.
// q, k: [B, K, H, Dk], v: [B, K, H, Dv] (a plain step's [B, H, D] seen with K = 1); o: [B, K, H, Dv].
inline DecodeParams decode_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& o,
                                  const at::Tensor& state, const float* slope, float scale) {
  DecodeParams p{};
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.o = o.data_ptr();
  p.state = state.data_ptr<float>();
  p.q_sb = q.stride(0), p.q_st = q.stride(1), p.q_sh = q.stride(2);
  p.k_sb = k.stride(0), p.k_st = k.stride(1), p.k_sh = k.stride(2);
  p.v_sb = v.stride(0), p.v_st = v.stride(1), p.v_sh = v.stride(2);
  p.B = int(q.size(0)), p.K = int(q.size(1)), p.H = int(q.size(2)), p.Dk = int(q.size(3)), p.Dv = int(v.size(3));
  p.num_slots = int(state.size(0));
  p.advance_all = true;
  p.slope = slope, p.scale = scale;
  return p;
}

}  // namespace cuda
}  // namespace lightning_attn
