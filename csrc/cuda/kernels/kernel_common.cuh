// The prologue every chunked kernel shares: which tokens a (sequence, segment) block
// covers, its chunk count, and the head's decay, all from the params struct.
#pragma once

#include <cstdint>

#include "../params.h"
#include "mma_utils.cuh"

namespace lightning_attn {
namespace cuda {

// The tokens of one block: rows [start, start + len) of batch row b hold sequence n;
// the block covers its logical tokens [seg_start, seg_start + seg_tokens) (logical time
// runs backwards from the sequence's last row in reversed sweeps).
struct SegmentSpan {
  int64_t start, len;   // the sequence's rows in its batch row
  int b;                // batch row (0 for packed sequences)
  int64_t seg_start;    // first logical token of the segment
  int64_t seg_tokens;   // tokens of the segment (<= 0: past the sequence's end)
  int64_t nchunks;      // chunks of kChunk tokens in the segment
};

// Params: ChunkParams or DkDvParams (cu32, cu64, T, seg_len, nseg). False for an empty
// segment of a split call: the block returns, and the scan skips it too.
template <typename Params>
__device__ __forceinline__ bool segment_span(const Params& p, int n, int seg, SegmentSpan& s) {
  sequence_range(p.cu32, p.cu64, n, p.T, s.start, s.len);
  s.b = (p.cu32 || p.cu64) ? 0 : n;
  s.seg_start = int64_t(seg) * p.seg_len;
  s.seg_tokens = s.len - s.seg_start < p.seg_len ? s.len - s.seg_start : p.seg_len;
  if (p.nseg > 1 && s.seg_tokens <= 0) return false;
  s.nchunks = s.seg_tokens > 0 ? (s.seg_tokens + kChunk - 1) / kChunk : 0;
  return true;
}

// Tokens of chunk ci of the segment (kChunk except in the last chunk).
__device__ __forceinline__ int chunk_tokens(const SegmentSpan& s, int64_t ci) {
  const int64_t rest = s.seg_tokens - ci * kChunk;
  return rest < kChunk ? int(rest) : kChunk;
}

// Where the state after `done` tokens of sequence n is kept as a checkpoint (ChunkParams::ckpt),
// or null: no checkpoints, not a multiple of ckpt_every, or past the last one.
__device__ __forceinline__ float* checkpoint_at(const ChunkParams& p, int64_t done, int n, int h) {
  if (!p.ckpt || done % p.ckpt_every != 0) return nullptr;
  const int64_t j = done / p.ckpt_every - 1;
  return j < p.nckpt ? p.ckpt.at(j, n, h) : nullptr;
}

// Head h's slice of a [B, T, H, D] operand with batch and head strides sb, sh.
template <typename T, typename Ptr>
__device__ __forceinline__ T* head_base(Ptr base, int b, int64_t sb, int h, int64_t sh) {
  return static_cast<T*>(base) + b * sb + h * sh;
}

// The backward kernels' four inputs (q, k, v, dO) at head h of batch row b.
template <typename TIn>
struct BackwardInputs {
  const TIn *q, *k, *v, *dout;
};
template <typename TIn, typename Params>
__device__ __forceinline__ BackwardInputs<TIn> backward_inputs(const Params& p, int b, int h) {
  return {head_base<const TIn>(p.q, b, p.q_sb, h, p.q_sh), head_base<const TIn>(p.k, b, p.k_sb, h, p.k_sh),
          head_base<const TIn>(p.v, b, p.v_sb, h, p.v_sh), head_base<const TIn>(p.dout, b, p.do_sb, h, p.do_sh)};
}

// Host: the attributes of the code the current device loads for `kernel`; zeros (binary version
// 0) where the build has none the device can run.
template <typename Kernel>
cudaFuncAttributes loaded_attributes(Kernel kernel) {
  cudaFuncAttributes a{};
  if (cudaFuncGetAttributes(&a, kernel) != cudaSuccess) {
    (void)cudaGetLastError();
    return cudaFuncAttributes{};
  }
  return a;
}

// Host: the architecture of that code (cudaFuncAttributes::binaryVersion, e.g. 80 or 90), or 0.
template <typename Kernel>
int binary_version(Kernel kernel) {
  return loaded_attributes(kernel).binaryVersion;
}

}  // namespace cuda
}  // namespace lightning_attn
