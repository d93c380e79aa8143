// The generic chunked kernel (see chunk_params.h for the recurrence it computes).
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
// STATE_ONLY blocks run only the R update (pass 1 of the sequence split).
#pragma once

#include "torch_cuda_headers.h"

#include "chunk_params.h"
#include "mma_utils.cuh"

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

// Copies rows [t0, t0 + clen) (logical time) of one operand into a [kChunk, P] shared
// tile, columns [0, W) of which the first `valid` exist; everything else is zero.
template <int W, int P, typename TIn, typename TC>
__device__ __forceinline__ void load_tile(TC* __restrict__ s, const TIn* __restrict__ base,
                                          int64_t st, int valid, bool vec, int64_t t0, int clen,
                                          int64_t start, int64_t len, bool reverse) {
  constexpr int G = W / 8;  // 8-element (16 bytes of TC) groups per row
  for (int idx = threadIdx.x; idx < kChunk * G; idx += kWarps * 32) {
    const int r = idx / G, col = (idx % G) * 8;
    TC* dst = s + r * P + col;
    if (r < clen && col < valid) {
      const int64_t t = t0 + r;
      const int64_t row = reverse ? start + len - 1 - t : start + t;
      const TIn* src = base + row * st + col;
      if (vec && col + 8 <= valid) {
        if constexpr (sizeof(TIn) == 2) {
          cp_async16(dst, src);
        } else {
          const float4 a = reinterpret_cast<const float4*>(src)[0];
          const float4 b = reinterpret_cast<const float4*>(src)[1];
          uint4 u;
          u.x = pack2<TC>(a.x, a.y);
          u.y = pack2<TC>(a.z, a.w);
          u.z = pack2<TC>(b.x, b.y);
          u.w = pack2<TC>(b.z, b.w);
          *reinterpret_cast<uint4*>(dst) = u;
        }
      } else {
        float f[8];
#pragma unroll
        for (int e = 0; e < 8; ++e) f[e] = col + e < valid ? to_float(src[e]) : 0.f;
        uint4 u;
        u.x = pack2<TC>(f[0], f[1]);
        u.y = pack2<TC>(f[2], f[3]);
        u.z = pack2<TC>(f[4], f[5]);
        u.w = pack2<TC>(f[6], f[7]);
        *reinterpret_cast<uint4*>(dst) = u;
      }
    } else {
      *reinterpret_cast<uint4*>(dst) = make_uint4(0, 0, 0, 0);
    }
  }
}

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
  constexpr int SWM = kWarps < DK / 16 ? kWarps : DK / 16;  // warps along the state rows
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
  const int g = lane / 4, cq = lane % 4;
  const int mt = warp % MT, ch = warp / MT;
  const int srow0 = (warp % SWM) * RROWS, scol0 = (warp / SWM) * SCOLS;  // this warp's state block

  const int nvt = (p.Dv + VT - 1) / VT;
  int bx = blockIdx.x;
  const int vt = bx % nvt;
  bx /= nvt;
  const int h = bx % p.H, n = bx / p.H;
  const int seg = blockIdx.y;
  const int col0 = vt * VT;

  int64_t start, len;
  sequence_range(p.cu32, p.cu64, n, p.T, start, len);
  const int b = (p.cu32 || p.cu64) ? 0 : n;
  const int64_t seg_start = int64_t(seg) * p.seg_len;
  const int64_t seg_tokens = len - seg_start < p.seg_len ? len - seg_start : p.seg_len;
  if (p.nseg > 1 && seg_tokens <= 0) return;  // empty segment: the scan skips it too
  const int64_t nchunks = seg_tokens > 0 ? (seg_tokens + kChunk - 1) / kChunk : 0;

  const float l2 = log2_lambda(p.slope, h);

  const TIn* qb = STATE_ONLY ? nullptr
                             : static_cast<const TIn*>(p.q) + b * p.q_sb + h * p.q_sh;
  const TIn* kb = static_cast<const TIn*>(p.k) + b * p.k_sb + h * p.k_sh;
  const TIn* vb = static_cast<const TIn*>(p.v) + b * p.v_sb + h * p.v_sh + col0;
  const int v_valid = p.Dv - col0 < VT ? p.Dv - col0 : VT;

  auto load_chunk = [&](int64_t ci, int buf) {
    const int64_t t0 = seg_start + ci * kChunk;
    const int64_t rest = seg_tokens - ci * kChunk;
    const int clen = rest < kChunk ? int(rest) : kChunk;
    if constexpr (!STATE_ONLY)
      load_tile<DK, QP>(sQ(buf), qb, p.q_st, p.Dk, p.q_vec, t0, clen, start, len, p.reverse);
    load_tile<DK, QP>(sK(buf), kb, p.k_st, p.Dk, p.k_vec, t0, clen, start, len, p.reverse);
    load_tile<VT, VP>(sV(buf), vb, p.v_st, v_valid, p.v_vec, t0, clen, start, len, p.reverse);
  };

  // ---- state R (fp32, registers) from the incoming state
  float racc[RM][NS][4];
  {
    const float* ib = p.init ? p.init + seg * p.init_sseg + n * p.init_sn + h * p.init_sh : nullptr;
#pragma unroll
    for (int mi = 0; mi < RM; ++mi)
#pragma unroll
      for (int nt = 0; nt < NS; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = srow0 + mi * 16 + g + (e / 2) * 8;
          const int j = col0 + scol0 + nt * 8 + 2 * cq + (e % 2);
          racc[mi][nt][e] = (ib && i < p.Dk && j < p.Dv) ? ib[i * p.init_sk + j * p.init_sv] : 0.f;
        }
  }
  auto store_state_copy = [&]() {
#pragma unroll
    for (int mi = 0; mi < RM; ++mi)
#pragma unroll
      for (int nt = 0; nt < NS; ++nt) {
        const int i = srow0 + mi * 16 + g, j = scol0 + nt * 8 + 2 * cq;
        *reinterpret_cast<uint32_t*>(sR + i * VP + j) = pack2<TC>(racc[mi][nt][0], racc[mi][nt][1]);
        *reinterpret_cast<uint32_t*>(sR + (i + 8) * VP + j) = pack2<TC>(racc[mi][nt][2], racc[mi][nt][3]);
      }
  };
  if constexpr (!STATE_ONLY) store_state_copy();

  if (nchunks > 0) load_chunk(0, 0);
  cp_async_commit();

  for (int64_t ci = 0; ci < nchunks; ++ci) {
    const int cur = int(ci & 1);
    cp_async_wait_all();
    __syncthreads();  // chunk ci landed; every warp is done with chunk ci-1's stage
    if (ci + 1 < nchunks) load_chunk(ci + 1, cur ^ 1);
    cp_async_commit();

    const int64_t rest = seg_tokens - ci * kChunk;
    const int clen = rest < kChunk ? int(rest) : kChunk;
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

      // -- A = Q K^T on the causal part: token pairs-of-8 p <= warp
      float sc[4][2][4];
#pragma unroll
      for (int pp = 0; pp < 4; ++pp)
#pragma unroll
        for (int hn = 0; hn < 2; ++hn)
#pragma unroll
          for (int e = 0; e < 4; ++e) sc[pp][hn][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        const uint32_t(&a)[4] = q_frag(kk);
#pragma unroll
        for (int pp = 0; pp < 4; ++pp) {
          if (pp <= mt) {
            uint32_t bk[4];
            ldsm_x4(bk, k_s + (pp * 16 + (lane / 16) * 8 + lane % 8) * QP + kk * 16 + ((lane / 8) % 2) * 8);
            mma16816<TC>(sc[pp][0], a, bk[0], bk[1]);
            mma16816<TC>(sc[pp][1], a, bk[2], bk[3]);
          }
        }
      }
      // -- decay mask lambda^(r-s) (r >= s), times scale_intra, into A fragments
      uint32_t af[4][4];
#pragma unroll
      for (int pp = 0; pp < 4; ++pp) {
        if (pp <= mt) {
          float m[2][4];
#pragma unroll
          for (int hn = 0; hn < 2; ++hn)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const int r = m0 + g + (e / 2) * 8;
              const int s = pp * 16 + hn * 8 + 2 * cq + (e % 2);
              m[hn][e] = s <= r ? sc[pp][hn][e] * p.scale_intra * exp2f(float(r - s) * l2) : 0.f;
            }
          af[pp][0] = pack2<TC>(m[0][0], m[0][1]);
          af[pp][1] = pack2<TC>(m[0][2], m[0][3]);
          af[pp][2] = pack2<TC>(m[1][0], m[1][1]);
          af[pp][3] = pack2<TC>(m[1][2], m[1][3]);
        }
      }
      // -- O = Q R (R: state entering the chunk)
      float oacc[NT][4];
#pragma unroll
      for (int nt = 0; nt < NT; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) oacc[nt][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KS; ++kk) {
        const uint32_t(&a)[4] = q_frag(kk);
#pragma unroll
        for (int np = 0; np < NT / 2; ++np) {
          uint32_t br[4];
          ldsm_x4_trans(br, sR + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * VP + ch * OW + np * 16 + (lane / 16) * 8);
          mma16816<TC>(oacc[2 * np], a, br[0], br[1]);
          mma16816<TC>(oacc[2 * np + 1], a, br[2], br[3]);
        }
      }
      {
        const int r0 = m0 + g;
        const float f0 = p.scale_state * exp2f(float(r0 + p.qoff) * l2);
        const float f1 = p.scale_state * exp2f(float(r0 + 8 + p.qoff) * l2);
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          oacc[nt][0] *= f0;
          oacc[nt][1] *= f0;
          oacc[nt][2] *= f1;
          oacc[nt][3] *= f1;
        }
      }
      // -- O += A V
#pragma unroll
      for (int pp = 0; pp < 4; ++pp) {
        if (pp <= mt) {
#pragma unroll
          for (int np = 0; np < NT / 2; ++np) {
            uint32_t bv[4];
            ldsm_x4_trans(bv, v_s + (pp * 16 + ((lane / 8) % 2) * 8 + lane % 8) * VP + ch * OW + np * 16 + (lane / 16) * 8);
            mma16816<TC>(oacc[2 * np], af[pp], bv[0], bv[1]);
            mma16816<TC>(oacc[2 * np + 1], af[pp], bv[2], bv[3]);
          }
        }
      }
      // -- store O rows straight from the accumulators
      TIn* ob = static_cast<TIn*>(p.o) + b * p.o_sb + h * p.o_sh;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int r = m0 + g + half * 8;
        if (r < clen) {
          const int64_t t = seg_start + ci * kChunk + r;
          const int64_t row = p.reverse ? start + len - 1 - t : start + t;
          TIn* orow = ob + row * p.o_st;
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const int j = col0 + ch * OW + nt * 8 + 2 * cq;
            const float x0 = oacc[nt][2 * half], x1 = oacc[nt][2 * half + 1];
            if (p.o_vec2 && j + 1 < p.Dv) {
              if constexpr (sizeof(TIn) == 2) {
                *reinterpret_cast<uint32_t*>(orow + j) = pack2<TIn>(x0, x1);
              } else {
                *reinterpret_cast<float2*>(orow + j) = make_float2(x0, x1);
              }
            } else {
              if (j < p.Dv) orow[j] = from_float<TIn>(x0);
              if (j + 1 < p.Dv) orow[j + 1] = from_float<TIn>(x1);
            }
          }
        }
      }
    }

    // -- R = lambda^c R + sum_j w_j k_j v_j^T
    {
      const float cdecay = exp2f(float(clen) * l2);
#pragma unroll
      for (int mi = 0; mi < RM; ++mi)
#pragma unroll
        for (int nt = 0; nt < NS; ++nt)
#pragma unroll
          for (int e = 0; e < 4; ++e) racc[mi][nt][e] *= cdecay;
#pragma unroll
      for (int kk = 0; kk < kChunk / 16; ++kk) {
        auto wt = [&](int j) {
          return j < clen ? p.scale_upd * exp2f(float(clen - 1 - j + p.koff) * l2) : 0.f;
        };
        const int j0 = kk * 16 + 2 * cq;
        const uint32_t wlo = pack2<TC>(wt(j0), wt(j0 + 1));
        const uint32_t whi = pack2<TC>(wt(j0 + 8), wt(j0 + 9));
        uint32_t bv[NS / 2][4];
#pragma unroll
        for (int np = 0; np < NS / 2; ++np)
          ldsm_x4_trans(bv[np], v_s + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * VP + scol0 + np * 16 + (lane / 16) * 8);
#pragma unroll
        for (int mi = 0; mi < RM; ++mi) {
          uint32_t a[4];
          ldsm_x4_trans(a, k_s + (kk * 16 + (lane / 16) * 8 + lane % 8) * QP + srow0 + mi * 16 +
                               ((lane / 8) % 2) * 8);
          a[0] = mul2<TC>(a[0], wlo);
          a[1] = mul2<TC>(a[1], wlo);
          a[2] = mul2<TC>(a[2], whi);
          a[3] = mul2<TC>(a[3], whi);
#pragma unroll
          for (int np = 0; np < NS / 2; ++np) {
            mma16816<TC>(racc[mi][2 * np], a, bv[np][0], bv[np][1]);
            mma16816<TC>(racc[mi][2 * np + 1], a, bv[np][2], bv[np][3]);
          }
        }
      }
    }
    if constexpr (!STATE_ONLY) {
      __syncthreads();  // every warp has read the old state copy
      store_state_copy();
    }
  }
  cp_async_wait_all();

  // ---- outgoing state
  if (p.out_state != nullptr) {
    float* ob = p.out_state + seg * p.out_sseg + n * p.out_sn + h * p.out_sh;
#pragma unroll
    for (int mi = 0; mi < RM; ++mi)
#pragma unroll
      for (int nt = 0; nt < NS; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = srow0 + mi * 16 + g + (e / 2) * 8;
          const int j = col0 + scol0 + nt * 8 + 2 * cq + (e % 2);
          if (i < p.Dk && j < p.Dv) ob[i * p.out_sk + j * p.out_sv] = racc[mi][nt][e];
        }
  }
}

template <int DK, int VT, typename TIn, bool STATE_ONLY>
void launch_chunk_impl(const ChunkParams& p, cudaStream_t stream) {
  const size_t smem = ChunkSmem<DK, VT>::bytes(STATE_ONLY);
  auto kernel = chunk_kernel<DK, VT, TIn, STATE_ONLY>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const int nvt = (p.Dv + VT - 1) / VT;
  const dim3 grid(unsigned(int64_t(p.N) * p.H * nvt), unsigned(p.nseg));
  kernel<<<grid, kWarps * 32, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int DK, int VT, typename TIn>
int chunk_blocks_per_sm_impl(bool state_only) {
  const size_t smem = ChunkSmem<DK, VT>::bytes(state_only);
  auto kernel = state_only ? chunk_kernel<DK, VT, TIn, true> : chunk_kernel<DK, VT, TIn, false>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int n = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kWarps * 32, smem));
  return n > 0 ? n : 1;
}

// Instantiates the launchers of one (head dim, v tile) for one input type.
#define LIGHTNING_ATTN_INSTANTIATE_CHUNK(DK, VT, TIN)                                          \
  template <>                                                                                  \
  void launch_chunk<DK, VT, TIN>(const ChunkParams& p, bool state_only, cudaStream_t stream) { \
    if (state_only)                                                                            \
      launch_chunk_impl<DK, VT, TIN, true>(p, stream);                                         \
    else                                                                                       \
      launch_chunk_impl<DK, VT, TIN, false>(p, stream);                                        \
  }                                                                                            \
  template <>                                                                                  \
  int chunk_blocks_per_sm<DK, VT, TIN>(bool state_only) {                                      \
    static const int full = chunk_blocks_per_sm_impl<DK, VT, TIN>(false);                      \
    static const int state = chunk_blocks_per_sm_impl<DK, VT, TIN>(true);                      \
    return state_only ? state : full;                                                          \
  }

}  // namespace cuda
}  // namespace lightning_attn
