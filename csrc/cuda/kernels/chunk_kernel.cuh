// The generic chunked kernel (see params.h for the recurrence it computes).
//
// One block = one (sequence, head, v tile of VT columns, segment), 8 warps. It loops
// over the segment's chunks of 64 tokens with the fp32 state slice R[DK, VT] in
// registers (each warp owns a 16- or 32-row block of it); a 16-bit copy of R sits in
// shared memory for the Q R product. Per chunk, warp (mt, ch) = (w % 4, w / 4) owns
// output rows [16mt, 16mt+16) and columns [ch*VT/2, (ch+1)*VT/2); both warps of a row
// tile compute that tile's scores (cheaper than exchanging them through shared memory):
//   A = mask(Q K^T)              16 x 64, fp32 accumulators -> 16-bit A fragments in registers
//   O = diag(qd) Q R + A V       written straight from registers
//   R = lambda^c R + (w K)^T V   (w: per-token decay weights applied to the K fragments)
// Chunk i+1 streams into the other shared-memory stage by cp.async while chunk i computes.
// STATE_ONLY blocks run only the R update (pass 1 of the sequence split). Full sweeps also store
// R at the checkpoints they pass (ChunkParams::ckpt).
#pragma once

#include "../launch.h"
#include "../torch_cuda_headers.h"
#include "kernel_common.cuh"
#include "mma_utils.cuh"
#include "warp_tiles.cuh"

namespace lightning_attn {
namespace cuda {

template <int DK, int VT>
struct ChunkSmem {
  static constexpr int kQPitch = DK + 8;  // +16 bytes per row: conflict-free ldmatrix
  static constexpr int kVPitch = VT + 8;
  static constexpr int kQTile = kChunk * kQPitch;
  static constexpr int kVTile = kChunk * kVPitch;
  static constexpr int kStage = 2 * kQTile + kVTile;  // Q, K, V of one chunk
  static constexpr int kState = DK * kVPitch;         // 16-bit copy of R
  static constexpr size_t bytes(bool state_only) {
    return 2 * (state_only ? 2 * (kQTile + kVTile) : 2 * kStage + kState);
  }
};

template <int DK, int VT, typename TIn, bool STATE_ONLY>
__global__ void __launch_bounds__(kWarps * 32) chunk_kernel(const ChunkParams p) {
  using TC = typename ComputeType<TIn>::type;
  using L = ChunkSmem<DK, VT>;
  constexpr int QP = L::kQPitch, VP = L::kVPitch;
  constexpr int KS = DK / 16;                       // k-steps over the head dim
  constexpr int MT = kChunk / 16;                   // row tiles of a chunk
  constexpr int CH = kWarps / MT;                   // warps per row tile (column halves)
  constexpr int OW = VT / CH;                       // output columns per warp
  constexpr int NT = OW / 8;                        // output n-tiles per warp
  constexpr int SWM = state_row_warps<DK>();  // warps along the state rows
  constexpr int SWN = kWarps / SWM;                 // warps along the state columns
  constexpr int RROWS = DK / SWM;                   // state rows per warp
  constexpr int RM = RROWS / 16;                    // state m-tiles per warp
  constexpr int SCOLS = VT / SWN;                   // state columns per warp
  constexpr int NS = SCOLS / 8;                     // state n-tiles per warp
  constexpr bool kCacheQ = DK <= 128;               // keep Q fragments in registers for both products
  static_assert(RM >= 1 && NT % 2 == 0 && NS % 2 == 0 && CH * MT == kWarps, "tile shape");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  TC* smem = reinterpret_cast<TC*>(smem_raw);
  // Stage layout: [Q][K][V] per stage (no Q in STATE_ONLY), then the 16-bit state copy.
  // Stage pointers come from arithmetic on the stage index: an array of pointers indexed
  // at run time would live in local memory.
  constexpr int kStageElems = STATE_ONLY ? L::kQTile + L::kVTile : L::kStage;
  constexpr int kQOff = 0, kKOff = STATE_ONLY ? 0 : L::kQTile, kVOff = kKOff + L::kQTile;
  auto sQ = [&](int buf) { return smem + buf * kStageElems + kQOff; };
  auto sK = [&](int buf) { return smem + buf * kStageElems + kKOff; };
  auto sV = [&](int buf) { return smem + buf * kStageElems + kVOff; };
  TC* sR = smem + 2 * kStageElems;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int mt = warp % MT, ch = warp / MT;
  const int srow0 = (warp % SWM) * RROWS, scol0 = (warp / SWM) * SCOLS;  // this warp's state block

  const int nvt = (p.Dv + VT - 1) / VT;
  int bx = blockIdx.x;
  const int vt = bx % nvt;
  bx /= nvt;
  const int h = bx % p.H, n = bx / p.H;
  const int seg = blockIdx.y;
  const int col0 = vt * VT;

  SegmentSpan sp;
  if (!segment_span(p, n, seg, sp)) return;  // empty segment of a split call: the whole block returns

  const float l2 = log2_lambda(p.slope, h);

  const TIn* qb = STATE_ONLY ? nullptr
                             : head_base<const TIn>(p.q, sp.b, p.q_sb, h, p.q_sh);
  const TIn* kb = head_base<const TIn>(p.k, sp.b, p.k_sb, h, p.k_sh);
  const TIn* vb = head_base<const TIn>(p.v, sp.b, p.v_sb, h, p.v_sh) + col0;
  const int v_valid = p.Dv - col0 < VT ? p.Dv - col0 : VT;

  auto load_chunk = [&](int64_t ci, int buf) {
    const int64_t t0 = sp.seg_start + ci * kChunk;
    const int clen = chunk_tokens(sp, ci);
    if constexpr (!STATE_ONLY)
      load_tile<DK, QP>(sQ(buf), qb, p.q_st, p.Dk, p.q_vec, t0, clen, sp.start, sp.len, p.reverse);
    load_tile<DK, QP>(sK(buf), kb, p.k_st, p.Dk, p.k_vec, t0, clen, sp.start, sp.len, p.reverse);
    load_tile<VT, VP>(sV(buf), vb, p.v_st, v_valid, p.v_vec, t0, clen, sp.start, sp.len, p.reverse);
  };

  // ---- state R (fp32, registers) from the incoming state
  float racc[RM][NS][4];
  load_state(racc, STATE_ONLY ? p.init.at(seg, n, h) : p.init.row_at(seg, n, h),
             p.init.sk, p.init.sv, p.init.spx, srow0, col0 + scol0, p.Dk, p.Dv, lane);
  auto store_state_copy = [&]() { cuda::store_state_copy<RM, NS, VP>(racc, sR, srow0, scol0, lane); };
  if constexpr (!STATE_ONLY) store_state_copy();

  if (sp.nchunks > 0) load_chunk(0, 0);
  cp_async_commit();

  for (int64_t ci = 0; ci < sp.nchunks; ++ci) {
    const int cur = int(ci & 1);
    cp_async_wait_all();
    __syncthreads();  // chunk ci landed; every warp is done with chunk ci-1's stage
    if (ci + 1 < sp.nchunks) load_chunk(ci + 1, cur ^ 1);
    cp_async_commit();

    const int clen = chunk_tokens(sp, ci);
    const TC* k_s = sK(cur);
    const TC* v_s = sV(cur);

    if constexpr (!STATE_ONLY) {
      const TC* q_s = sQ(cur);
      const int m0 = mt * 16;
      // -- Q fragments of this warp's 16 rows
      uint32_t qf[kCacheQ ? KS : 1][4];
      auto q_frag = [&](int kk) -> const uint32_t(&)[4] {
        if constexpr (kCacheQ) {
          return qf[kk];
        } else {
          ldsm_x4(qf[0], q_s + (m0 + (lane % 16)) * QP + kk * 16 + (lane / 16) * 8);
          return qf[0];
        }
      };
      if constexpr (kCacheQ) {
#pragma unroll
        for (int kk = 0; kk < KS; ++kk)
          ldsm_x4(qf[kk], q_s + (m0 + (lane % 16)) * QP + kk * 16 + (lane / 16) * 8);
      }

      // -- A = mask(Q K^T) on the causal part, times scale_intra, as A fragments
      uint32_t af[4][4];
      masked_scores<KS, QP, TC>(af, q_frag, k_s, mt, lane, p.scale_intra, l2);
      // -- O = lambda^(r+qoff) scale_state Q R (R: state entering the chunk) + A V
      float oacc[NT][4];
      times_state<KS, NT, VP, false, TC>(oacc, q_frag, sR, ch * OW, lane);
      scale_rows(oacc, p.scale_state * exp2f(float(m0 + g + p.qoff) * l2),
                 p.scale_state * exp2f(float(m0 + g + 8 + p.qoff) * l2));
      scores_times<NT, VP, TC>(oacc, af, v_s, ch * OW, mt, lane);
      store_rows<NT, TIn>(oacc, head_base<TIn>(p.o, sp.b, p.o_sb, h, p.o_sh), p.o_st, col0 + ch * OW, p.Dv,
                          p.o_vec2, m0, lane, clen, sp.seg_start + ci * kChunk, sp.start, sp.len, p.reverse);
    }

    // -- R = lambda^c R + sum_j w_j k_j v_j^T
    update_state<RM, NS, QP, VP, TC>(racc, k_s, v_s, srow0, scol0, clen, p.scale_upd, p.koff, l2, lane);
    if constexpr (!STATE_ONLY) {
      if (float* c = checkpoint_at(p, sp.seg_start + ci * kChunk + clen, n, h))
        save_state(racc, c, p.ckpt.sk, p.ckpt.sv, p.ckpt.spx, srow0, col0 + scol0, p.Dk, p.Dv, lane);
      __syncthreads();  // every warp has read the old state copy
      store_state_copy();
    }
  }
  cp_async_wait_all();

  // ---- outgoing state
  float* const dst = STATE_ONLY ? p.out_state.at(seg, n, h) : p.out_state.row_at(seg, n, h);
  if (dst) save_state(racc, dst, p.out_state.sk, p.out_state.sv, p.out_state.spx, srow0, col0 + scol0, p.Dk, p.Dv, lane);
}

template <int DK, int VT, typename TIn, bool STATE_ONLY>
void launch_chunk_portable(const ChunkParams& p, cudaStream_t stream) {
  const size_t smem = ChunkSmem<DK, VT>::bytes(STATE_ONLY);
  auto kernel = chunk_kernel<DK, VT, TIn, STATE_ONLY>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int nvt = (p.Dv + VT - 1) / VT;
  const dim3 grid(unsigned(int64_t(p.N) * p.H * nvt), unsigned(p.nseg));
  kernel<<<grid, kWarps * 32, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Blocks per SM on the current device (cached per device by the caller, dispatch.h).
template <int DK, int VT, typename TIn, bool STATE_ONLY>
int chunk_portable_blocks_per_sm() {
  const size_t smem = ChunkSmem<DK, VT>::bytes(STATE_ONLY);
  auto kernel = chunk_kernel<DK, VT, TIn, STATE_ONLY>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int n = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kWarps * 32, smem));
  return n > 0 ? n : 1;
}

// The launchers of one (padded head dim, v tile, input type), for instantiations/.
#define LIGHTNING_ATTN_INSTANTIATE_CHUNK(DK, VT, TIN)                                               \
  template void launch_chunk_portable<DK, VT, TIN, true>(const ChunkParams&, cudaStream_t);         \
  template void launch_chunk_portable<DK, VT, TIN, false>(const ChunkParams&, cudaStream_t);        \
  template int chunk_portable_blocks_per_sm<DK, VT, TIN, true>();                                   \
  template int chunk_portable_blocks_per_sm<DK, VT, TIN, false>();

}  // namespace cuda
}  // namespace lightning_attn
