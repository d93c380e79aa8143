// Plain parameter structs of the CUDA kernels (strides in elements; kernels never see
// at::Tensor). params_builder.h fills them from tensors, one builder per struct.
//
// One generic chunked kernel serves the forward and the backward's generic passes. It
// computes, per (sequence, head), over logical time t (optionally the reversed sequence)
// cut into chunks of kChunk tokens, with lambda = exp(-slope):
//
//   o_t = scale_intra * sum_{j <= t, same chunk} lambda^(t-j) (q_t . k_j) v_j
//       + scale_state * lambda^(t_local + qoff) * R^T q_t        (R: state entering the chunk)
//   R  <- lambda^c R + scale_upd * sum_j lambda^(c-1-j_local+koff) k_j v_j^T
//
// The forward is (scale, scale, 1, qoff 1, koff 0). The backward maps onto it (see
// lightning_attn_cuda.cu): dq = forward sweep over (do, v, k) with R = S^T; dk, dv =
// reversed sweeps over (v, do, q) and (k, q, do) with R = dS^T or dS, or one fused
// reversed sweep (DkDvParams).
#pragma once

#include <cstdint>

#include <cuda_runtime.h>

#include "../op_limits.h"

namespace lightning_attn {
namespace cuda {

constexpr int kChunk = 64;  // tokens per chunk (one 16-row mma tile per warp)
constexpr int kWarps = 8;   // warps per block of the portable kernels: 4 row tiles x 2 column halves

// A set of fp32 [Dk, Dv] states, one per (segment, sequence, head): element (i, j) of the
// state of (seg, n, h) sits at ptr + seg*sseg + n*sn + h*sh + i*sk + j*sv + (j / 64)*spx.
// spx is 0 for a plain [.., Dk, Dv] tensor; it is not where the states live in the rows
// of an output (plan.cu), which stores each 64-column half of a state as its own rows.
struct StateRef {
  float* ptr = nullptr;
  int64_t sseg = 0, sn = 0, sh = 0, sk = 0, sv = 0, spx = 0;
  // A state pool: sequence n's state is row rows[n] of nrows (device memory). A row outside
  // [0, nrows) has no state: zeros on load, nothing stored.
  const int32_t* rows = nullptr;
  int64_t nrows = 0;

  __host__ __device__ explicit operator bool() const { return ptr != nullptr; }
  // The state of (seg, n, h), or null where there is none (zeros on load). Ignores rows: for
  // the states that are never a pool (segment states, the backward's).
  __host__ __device__ float* at(int64_t seg, int64_t n, int64_t h) const {
    return ptr == nullptr ? nullptr : ptr + seg * sseg + n * sn + h * sh;
  }
  // at() for a state that may be a pool: sequence n's row rows[n], null outside the pool
  // (zeros on load, no store). Kept apart from at() so that kernels whose states are never
  // pools (the state-only pass 1, the dk/dv sweeps) carry no extra registers.
  __device__ float* row_at(int64_t seg, int64_t n, int64_t h) const {
    if (rows != nullptr) {
      n = rows[n];
      if (n < 0 || n >= nrows) return nullptr;
    }
    return at(seg, n, h);
  }
};

struct ChunkParams {
  // Operands in the canonical [B, T, H, D] view: strides in elements for batch, time and
  // head; the last dim has stride 1.
  const void* q;
  const void* k;
  const void* v;
  void* o;
  int64_t q_sb, q_st, q_sh;
  int64_t k_sb, k_st, k_sh;
  int64_t v_sb, v_st, v_sh;
  int64_t o_sb, o_st, o_sh;
  bool q_vec, k_vec, v_vec;  // 16-byte loads are legal (aligned base and strides)
  bool o_vec2;               // 2-element stores are legal
  bool o_vec;                // 16-byte loads of o are legal (needed to accumulate into it)

  int Dk, Dv;  // real head dims of this (generic) problem
  int H, N;    // heads, sequences
  int64_t T;   // tokens per batch row (packed length with cu_seqlens)

  const int32_t* cu32;  // cu_seqlens, one of the two or none
  const int64_t* cu64;
  const float* slope;  // [H] or null (no decay)

  float scale_intra, scale_state, scale_upd;
  int qoff, koff;
  bool reverse;

  StateRef init;       // state entering each segment; null: zeros
  StateRef out_state;  // state written at the end (final state, or a segment's local state); null: none
  // Prefix checkpoints (forward-time full sweeps): the state after every ckpt_every tokens of
  // each sequence (a multiple of kChunk, so a checkpoint falls on a chunk's end) goes to
  // ckpt.at(j, n, h) for checkpoint j < nckpt; the sweep stores it as it passes. Null: none.
  StateRef ckpt;
  int64_t ckpt_every, nckpt;

  int64_t seg_len;    // tokens per segment (a multiple of kChunk); >= T without a split
  int nseg;           // segments per sequence (grid.y)
  bool o_accumulate;  // o += this problem's output (Hopper kernel only: dispatch.h)
  bool tma_store;     // Hopper kernel: o rows by stmatrix + TMA store, else 4-byte stores
};

// Fused reversed sweep of the backward for dk and dv (Dk, Dv <= 128): one pass over
// (q, k, v, do) per (sequence, head, segment) with dS [Dk, Dv] in registers:
//   dv_t = scale sum_{j<=t} lambda^(t-j) (k_t . q_j) do_j + lambda^t dS^T k_t
//   dk_t = scale sum_{j<=t} lambda^(t-j) (v_t . do_j) q_j + lambda^t dS v_t
//   dS  <- lambda^c dS + scale sum_j lambda^(c-j) q_j do_j^T      (t, j: reversed time)
// It replaces the two generic reversed problems, which each recompute dS and re-read q, do.
struct DkDvParams {
  const void* q;
  const void* k;
  const void* v;
  const void* dout;
  void* dk;
  void* dv;
  int64_t q_sb, q_st, q_sh, k_sb, k_st, k_sh, v_sb, v_st, v_sh, do_sb, do_st, do_sh;
  int64_t dk_sb, dk_st, dk_sh, dv_sb, dv_st, dv_sh;
  bool q_vec, k_vec, v_vec, do_vec, dk_vec2, dv_vec2;
  int Dk, Dv, H, N;
  int64_t T;
  const int32_t* cu32;
  const int64_t* cu64;
  const float* slope;
  float scale;
  StateRef init;       // dS entering each segment (d_final_state or the scan's output)
  StateRef out_state;  // dS after the sequence's first token (d_initial_state), or null
  int64_t seg_len;
  int nseg;
  bool dv_accumulate;  // dv += this call's dv (the Dk = 256 pieces; bf16 on the Hopper kernel only)
};

// Combines the local states of a split call's sub-segments: S[0] = init,
// S[j+1] = lambda^len_j S[j] + local[j]; writes S[j] where j is a segment's first
// sub-segment (j % F == 0, to s_in[j / F]) and the final state.
struct ScanParams {
  StateRef local;        // per sub-segment
  StateRef s_in;         // per segment
  StateRef init;         // no segment stride, or null
  StateRef final_state;  // or null
  int Dk, Dv, H, N;
  int64_t T, seg_len;  // seg_len: tokens per sub-segment
  int nseg;            // sub-segments per sequence
  int F;               // sub-segments per segment
  int nlocal;  // sub-segments with a local state (nseg, or nseg - F when no final state is asked)
  const int32_t* cu32;
  const int64_t* cu64;
  const float* slope;
};

// Decoding K tokens per sequence (kernels/state_kernels.cu). q, k: [B, K, H, Dk], v: [B, K, H, Dv]
// with strides; o: [B, K, H, Dv] contiguous.
struct DecodeParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* state;              // [num_slots, H, Dk, Dv] contiguous (num_slots = B without a pool)
  const int32_t* slot_ids;   // [B]: the state row of each sequence; nullptr: row b
  const int32_t* num_accepted;  // [B]: tokens the state advances by (clamped to [0, K]), or nullptr
  bool advance_all;          // without num_accepted: advance by all K tokens (else the state is read only)
  float* states;             // [B, K, H, Dk, Dv]: the state after each token, or nullptr
  int64_t q_sb, q_st, q_sh, k_sb, k_st, k_sh, v_sb, v_st, v_sh;
  int B, K, H, Dk, Dv, num_slots;
  const float* slope;
  float scale;
};

}  // namespace cuda
}  // namespace lightning_attn
