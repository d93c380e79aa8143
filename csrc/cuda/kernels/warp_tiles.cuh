// Warp-level pieces shared by the chunk kernel (chunk_kernel.cuh) and the fused dk/dv
// sweep (dkdv_kernel.cuh): chunk loads, the decay mask, score x tile products, row
// stores, and the fp32 state slice (load, 16-bit shared copy, save, per-chunk update).
//
// Fragment conventions (mma.sync m16n8k16): a warp owns output rows [m0, m0 + 16) of a
// 64-token chunk; lane = 4 g + cq holds rows g and g + 8, columns 2 cq and 2 cq + 1 of
// each 8-column n-tile. A state slice R[DK, VT] is spread over the warps by blocks of
// RM 16-row m-tiles x NS 8-column n-tiles starting at (srow0, scol0).
#pragma once

#include "../params.h"
#include "mma_utils.cuh"

namespace lightning_attn {
namespace cuda {

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

// Raw scores sc (rows of row tile mt against token pairs-of-8 pp <= mt) -> 16-bit A
// fragments of scale * lambda^(r-s) * score for s <= r, zero above the diagonal.
template <typename TC>
__device__ __forceinline__ void decay_mask_to_afrag(uint32_t (&af)[4][4], const float (&sc)[4][2][4],
                                                    int mt, int lane, float scale, float l2) {
  const int g = lane / 4, cq = lane % 4, m0 = mt * 16;
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
          m[hn][e] = s <= r ? sc[pp][hn][e] * (scale * exp2f(float(r - s) * l2)) : 0.f;  // factor loop-invariant
        }
      af[pp][0] = pack2<TC>(m[0][0], m[0][1]);
      af[pp][1] = pack2<TC>(m[0][2], m[0][3]);
      af[pp][2] = pack2<TC>(m[1][0], m[1][1]);
      af[pp][3] = pack2<TC>(m[1][2], m[1][3]);
    }
  }
}

// Masked scores of this warp's 16 rows (row tile mt) against the chunk's tokens, as 16-bit
// A fragments: scale * lambda^(r-s) * (X_r . Y_s) for s <= r. xfrag(kk): the warp's A
// fragment of X for k-step kk (a callable); y_s: a [kChunk, P] tile.
template <int KSTEPS, int P, typename TC, typename XFrag>
__device__ __forceinline__ void masked_scores(uint32_t (&af)[4][4], XFrag&& xfrag, const TC* y_s, int mt,
                                              int lane, float scale, float l2) {
  float sc[4][2][4];
#pragma unroll
  for (int pp = 0; pp < 4; ++pp)
#pragma unroll
    for (int hn = 0; hn < 2; ++hn)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[pp][hn][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < KSTEPS; ++kk) {
    const uint32_t(&a)[4] = xfrag(kk);
#pragma unroll
    for (int pp = 0; pp < 4; ++pp) {
      if (pp <= mt) {
        uint32_t b[4];
        ldsm_x4(b, y_s + (pp * 16 + (lane / 16) * 8 + lane % 8) * P + kk * 16 + ((lane / 8) % 2) * 8);
        mma16816<TC>(sc[pp][0], a, b[0], b[1]);
        mma16816<TC>(sc[pp][1], a, b[2], b[3]);
      }
    }
  }
  decay_mask_to_afrag<TC>(af, sc, mt, lane, scale, l2);
}

// acc[16 rows, NT*8 cols] += A-fragments (pairs pp <= mt, k = tokens) times rows of the
// [kChunk, P] tile y_s (ldmatrix.trans), columns [c0, c0 + NT*8).
template <int NT, int P, typename TC>
__device__ __forceinline__ void scores_times(float (&acc)[NT][4], const uint32_t (&af)[4][4],
                                             const TC* y_s, int c0, int mt, int lane) {
#pragma unroll
  for (int pp = 0; pp < 4; ++pp) {
    if (pp <= mt) {
#pragma unroll
      for (int np = 0; np < NT / 2; ++np) {
        uint32_t b[4];
        ldsm_x4_trans(b, y_s + (pp * 16 + ((lane / 8) % 2) * 8 + lane % 8) * P + c0 + np * 16 + (lane / 16) * 8);
        mma16816<TC>(acc[2 * np], af[pp], b[0], b[1]);
        mma16816<TC>(acc[2 * np + 1], af[pp], b[2], b[3]);
      }
    }
  }
}

// Stores a warp's [16, NT*8] accumulator tile (chunk rows m0.., columns c0..) as rows of
// a [B, T, H, D] output; t_base is the chunk's first logical time step.
template <int NT, typename TIn>
__device__ __forceinline__ void store_rows(const float (&acc)[NT][4], TIn* ob, int64_t st, int c0,
                                           int D, bool vec2, int m0, int lane, int clen,
                                           int64_t t_base, int64_t start, int64_t len, bool reverse) {
  const int g = lane / 4, cq = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = m0 + g + half * 8;
    if (r < clen) {
      const int64_t t = t_base + r;
      TIn* orow = ob + (reverse ? start + len - 1 - t : start + t) * st;
#pragma unroll
      for (int nt = 0; nt < NT; ++nt) {
        const int j = c0 + nt * 8 + 2 * cq;
        const float x0 = acc[nt][2 * half], x1 = acc[nt][2 * half + 1];
        if (vec2 && j + 1 < D) {
          if constexpr (sizeof(TIn) == 2) {
            *reinterpret_cast<uint32_t*>(orow + j) = pack2<TIn>(x0, x1);
          } else {
            *reinterpret_cast<float2*>(orow + j) = make_float2(x0, x1);
          }
        } else {
          if (j < D) orow[j] = from_float<TIn>(x0);
          if (j + 1 < D) orow[j + 1] = from_float<TIn>(x1);
        }
      }
    }
  }
}

// Multiplies row r = m0 + g (+8) of a warp's accumulator tile by f0 (f1).
template <int NT>
__device__ __forceinline__ void scale_rows(float (&acc)[NT][4], float f0, float f1) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    acc[nt][0] *= f0;
    acc[nt][1] *= f0;
    acc[nt][2] *= f1;
    acc[nt][3] *= f1;
  }
}

// Warps along the rows of a state slice R[DK, *] (the other kWarps / that along its columns):
// one 16-row block per warp where DK allows. A 4 x 2 tiling (V fragments of the update loaded
// by 4 warps instead of 8) measured up to 4% slower (v5 in benchmarks/HISTORY.md).
template <int DK>
constexpr int state_row_warps() { return DK / 16 < kWarps ? DK / 16 : kWarps; }

// The warp's block of a state slice: fp32 R[i][j] for rows srow0.. and columns col0..
// (col0: the block's first column of the whole state), read from or written to a
// strided [Dk, Dv] matrix (null: zeros / nothing), and its 16-bit copy in shared memory.
// spx is added once per 64 columns: 0 for a plain matrix; a split call that keeps its
// segment states in the rows of its output (see plan.cu) stores each
// 64-column panel as 128 output rows.
// f(x, i, j) visits each fragment entry x with its state row i and column j.
template <int RM, int NS, typename Frag, typename F>
__device__ __forceinline__ void for_state_entries(Frag& racc, int srow0, int col0, int lane, F&& f) {
  const int g = lane / 4, cq = lane % 4;
#pragma unroll
  for (int mi = 0; mi < RM; ++mi)
#pragma unroll
    for (int nt = 0; nt < NS; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e)
        f(racc[mi][nt][e], srow0 + mi * 16 + g + (e / 2) * 8, col0 + nt * 8 + 2 * cq + (e % 2));
}

template <int RM, int NS>
__device__ __forceinline__ void load_state(float (&racc)[RM][NS][4], const float* src, int64_t sk,
                                           int64_t sv, int64_t spx, int srow0, int col0, int Dk, int Dv,
                                           int lane) {
  for_state_entries<RM, NS>(racc, srow0, col0, lane, [&](float& x, int i, int j) {
    x = (src && i < Dk && j < Dv) ? src[i * sk + j * sv + (j >> 6) * spx] : 0.f;
  });
}

template <int RM, int NS>
__device__ __forceinline__ void save_state(const float (&racc)[RM][NS][4], float* dst, int64_t sk,
                                           int64_t sv, int64_t spx, int srow0, int col0, int Dk, int Dv,
                                           int lane) {
  for_state_entries<RM, NS>(racc, srow0, col0, lane, [&](const float& x, int i, int j) {
    if (i < Dk && j < Dv) dst[i * sk + j * sv + (j >> 6) * spx] = x;
  });
}

// The block's 16-bit copy in shared memory (pitch P), for the Q R products.
template <int RM, int NS, int P, typename TC>
__device__ __forceinline__ void store_state_copy(const float (&racc)[RM][NS][4], TC* sR, int srow0,
                                                 int scol0, int lane) {
  const int g = lane / 4, cq = lane % 4;
#pragma unroll
  for (int mi = 0; mi < RM; ++mi)
#pragma unroll
    for (int nt = 0; nt < NS; ++nt) {
      const int i = srow0 + mi * 16 + g, j = scol0 + nt * 8 + 2 * cq;
      *reinterpret_cast<uint32_t*>(sR + i * P + j) = pack2<TC>(racc[mi][nt][0], racc[mi][nt][1]);
      *reinterpret_cast<uint32_t*>(sR + (i + 8) * P + j) = pack2<TC>(racc[mi][nt][2], racc[mi][nt][3]);
    }
}

// acc = sum over k-steps kk of A(kk) B(kk): A(kk) the warp's 16 x 16 A fragment of k-step
// kk (a callable: cached registers or an ldmatrix), B the 16-bit state copy sR (pitch RP):
// columns [c0, c0 + NT*8) of its rows (R as stored) or, with kTransposed, of R^T.
template <int KSTEPS, int NT, int RP, bool kTransposed, typename TC, typename AFrag>
__device__ __forceinline__ void times_state(float (&acc)[NT][4], AFrag&& afrag, const TC* sR, int c0,
                                            int lane) {
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < KSTEPS; ++kk) {
    const uint32_t(&a)[4] = afrag(kk);
#pragma unroll
    for (int np = 0; np < NT / 2; ++np) {
      uint32_t br[4];
      if constexpr (kTransposed)  // B[k][n] = R[n][k]: rows n of the copy, k contiguous
        ldsm_x4(br, sR + (c0 + np * 16 + (lane / 16) * 8 + lane % 8) * RP + kk * 16 + ((lane / 8) % 2) * 8);
      else
        ldsm_x4_trans(br, sR + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * RP + c0 + np * 16 + (lane / 16) * 8);
      mma16816<TC>(acc[2 * np], a, br[0], br[1]);
      mma16816<TC>(acc[2 * np + 1], a, br[2], br[3]);
    }
  }
}

// R = lambda^clen R + scale * sum_j lambda^(clen-1-j+koff) k_j v_j^T over the chunk's
// tokens j < clen: k_s [kChunk, KP] and v_s [kChunk, VP] tiles; the per-token weights
// scale the K fragments (16-bit) before the product.
template <int RM, int NS, int KP, int VP, typename TC>
__device__ __forceinline__ void update_state(float (&racc)[RM][NS][4], const TC* k_s, const TC* v_s,
                                             int srow0, int scol0, int clen, float scale, int koff,
                                             float l2, int lane) {
  const int cq = lane % 4;
  const float cdecay = exp2f(float(clen) * l2);
#pragma unroll
  for (int mi = 0; mi < RM; ++mi)
#pragma unroll
    for (int nt = 0; nt < NS; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) racc[mi][nt][e] *= cdecay;
#pragma unroll
  for (int kk = 0; kk < kChunk / 16; ++kk) {
    auto wt = [&](int j) { return j < clen ? scale * exp2f(float(clen - 1 - j + koff) * l2) : 0.f; };
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
      ldsm_x4_trans(a, k_s + (kk * 16 + (lane / 16) * 8 + lane % 8) * KP + srow0 + mi * 16 + ((lane / 8) % 2) * 8);
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

}  // namespace cuda
}  // namespace lightning_attn
