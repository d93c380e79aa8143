// Plain parameter structs of the CUDA kernels (strides in elements; kernels never
// see at::Tensor), and the launchers the host code in lightning_attn_cuda.cu calls.
//
// One generic chunked kernel serves the forward and all three backward passes.
// It computes, per (sequence, head), over logical time t (optionally the reversed
// sequence) cut into chunks of kChunk tokens, with lambda = exp(-slope):
//
//   o_t = scale_intra * sum_{j <= t, same chunk} lambda^(t-j) (q_t . k_j) v_j
//       + scale_state * lambda^(t_local + qoff) * R^T q_t        (R: state entering the chunk)
//   R  <- lambda^c R + scale_upd * sum_j lambda^(c-1-j_local+koff) k_j v_j^T
//
// The forward is (scale, scale, 1, qoff 1, koff 0). The backward maps onto it
// (see lightning_attn_cuda.cu): dq = forward sweep over (do, v, k) with R = S^T;
// dv, dk = reversed sweeps over (k, q, do) and (v, do, q) with R = dS or dS^T.
#pragma once

#include <cstdint>
#include <cstdlib>

#include <cuda_runtime.h>

namespace lightning_attn {
namespace cuda {

constexpr int kChunk = 64;     // tokens per chunk (one 16-row mma tile per warp)
constexpr int kWarps = 8;      // warps per block of the chunk kernel: 4 row tiles x 2 column halves

// Whether the A/B switch `name` is set and starts with `c`; the switches are read at every call.
inline bool env_is(const char* name, char c) {
  const char* env = std::getenv(name);
  return env != nullptr && env[0] == c;
}

// LIGHTNING_ATTN_SM90=0 turns the Hopper kernels off.
inline bool sm90_enabled() { return !env_is("LIGHTNING_ATTN_SM90", '0'); }
// LIGHTNING_ATTN_SM90_D64=0 keeps Dk = Dv = 64 on the portable kernels (A/B, v12 and v13).
inline bool sm90_d64_enabled() { return !env_is("LIGHTNING_ATTN_SM90_D64", '0'); }
// Whether the Hopper kernels may serve head dim d (both switches above).
inline bool sm90_enabled_for(int d) { return sm90_enabled() && (d != 64 || sm90_d64_enabled()); }
// LIGHTNING_ATTN_SM90_ACC=0: no kernel adds into o (the Dk = 256 pieces take a temporary and an add).
inline bool sm90_acc_enabled() { return !env_is("LIGHTNING_ATTN_SM90_ACC", '0'); }

// Padded head dim of the q/k operands: 64, 128 or 256 (one instantiation each).
inline int padded_dk(int64_t dk) { return dk <= 64 ? 64 : (dk <= 128 ? 128 : 256); }
// Width VT of the v tile a block owns (chosen in lightning_attn_cuda.cu): 128 where
// Dv > 64 (all of Dv = 128 in one block, so q and k are read once; measured 0.72 ->
// 0.67 ms, KERNEL_NOTES.md), 64 for Dv <= 64 (no padded half tile) and at Dk = 256
// (the fp32 state slice 256 x 64 then stays in registers, 64 floats per thread).

struct ChunkParams {
  // Operands in the canonical [B, T, H, D] view: strides in elements for batch,
  // time and head; the last dim has stride 1.
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

  int Dk, Dv;   // real head dims of this (generic) problem
  int H, N;     // heads, sequences
  int64_t T;    // tokens per batch row (packed length with cu_seqlens)

  const int32_t* cu32;  // cu_seqlens, one of the two or none
  const int64_t* cu64;
  const float* slope;   // [H] or null (no decay)

  float scale_intra, scale_state, scale_upd;
  int qoff, koff;
  bool reverse;

  // State entering segment `seg` of (n, h): init + seg*init_sseg + n*init_sn + h*init_sh
  // + i*init_sk + j*init_sv + (j / 64)*init_spx (i < Dk, j < Dv); null means zeros.
  // spx is 0 for a plain [.., Dk, Dv] tensor (see StateView in lightning_attn_cuda.cu).
  const float* init;
  int64_t init_sseg, init_sn, init_sh, init_sk, init_sv, init_spx;
  // State written at the end (final state, or a segment's local state); null: none.
  float* out_state;
  int64_t out_sseg, out_sn, out_sh, out_sk, out_sv, out_spx;

  int64_t seg_len;  // tokens per segment (a multiple of kChunk); >= T without a split
  int nseg;         // segments per sequence (grid.y)
  bool o_accumulate;  // o += this problem's output (only where chunk_fast_takes says so)
  bool tma_store;     // Hopper TMA kernel: o rows by stmatrix + TMA store (v9), else 4-byte stores
};

// Fused reversed sweep of the backward for dk and dv (Dk, Dv <= 128): one pass over
// (q, k, v, do) per (sequence, head, segment) with dS [Dk, Dv] in registers:
//   dv_t = scale sum_{j<=t} lambda^(t-j) (k_t . q_j) do_j + lambda^t dS^T k_t
//   dk_t = scale sum_{j<=t} lambda^(t-j) (v_t . do_j) q_j + lambda^t dS v_t
//   dS  <- lambda^c dS + scale sum_j lambda^(c-j) q_j do_j^T      (t, j: reversed time)
// It replaces the two generic reversed problems, which each recomputed dS and re-read q, do.
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
  const float* init;  // dS entering each segment (d_final_state or the scan's output)
  int64_t init_sseg, init_sn, init_sh, init_sk, init_sv, init_spx;  // as in ChunkParams
  float* out_state;   // dS after the sequence's first token (d_initial_state), or null
  int64_t out_sn, out_sh, out_sk, out_sv;
  int64_t seg_len;
  int nseg;
  bool dv_accumulate;  // dv += this call's dv (the Dk = 256 pieces; bf16 on the Hopper kernel only)
};

template <int DK, int DV, typename TIn>
void launch_dkdv(const DkDvParams& p, cudaStream_t stream);
template <int DK, int DV, typename TIn>
int dkdv_blocks_per_sm();
// Whether launch_dkdv takes p with dv_accumulate set.
template <int DK, int DV, typename TIn>
bool dkdv_takes_accumulate(const DkDvParams& p);

// Combines the local states of a split call's sub-segments: S[0] = init,
// S[j+1] = lambda^len_j S[j] + local[j]; writes S[j] where j is a segment's first
// sub-segment (j % F == 0, to s_in[j / F]) and the final state. local and s_in are
// strided like ChunkParams::init (their own sseg ... spx).
struct ScanParams {
  const float* local;
  int64_t loc_sseg, loc_sn, loc_sh, loc_sk, loc_sv, loc_spx;
  float* s_in;
  int64_t in_sseg, in_sn, in_sh, in_sk, in_sv, in_spx;
  const float* init;   // strided like ChunkParams::init (no segment stride), or null
  int64_t init_sn, init_sh, init_sk, init_sv;
  float* final_state;  // or null
  int64_t fin_sn, fin_sh, fin_sk, fin_sv;
  int Dk, Dv, H, N;
  int64_t T, seg_len;  // seg_len: tokens per sub-segment
  int nseg;            // sub-segments per sequence
  int F;               // sub-segments per segment
  int nlocal;  // sub-segments with a local state (nseg, or nseg - F when no final state is asked)
  const int32_t* cu32;
  const int64_t* cu64;
  const float* slope;
};

struct DecodeParams {
  const void* q;
  const void* k;
  const void* v;
  void* o;           // [B, H, Dv] contiguous
  float* state;      // [B, H, Dk, Dv] contiguous
  int64_t q_sb, q_sh, k_sb, k_sh, v_sb, v_sh;
  int B, H, Dk, Dv;
  const float* slope;
  float scale;
};

// TIn: float, __half or __nv_bfloat16 (defined in the chunk_dk*.cu files).
template <int DK, int VT, typename TIn>
void launch_chunk(const ChunkParams& p, bool state_only, cudaStream_t stream);
// Whether launch_chunk runs p with o_accumulate (o += result) on this device and build:
// the Hopper kernel only.
template <int DK, int VT, typename TIn>
bool chunk_takes_accumulate(const ChunkParams& p);
// Blocks of the chunk kernel that fit on one SM (for choosing the split).
template <int DK, int VT, typename TIn>
int chunk_blocks_per_sm(bool state_only);

void launch_scan(const ScanParams& p, cudaStream_t stream);

template <typename TIn>
void launch_decode(const DecodeParams& p, cudaStream_t stream);

}  // namespace cuda
}  // namespace lightning_attn
