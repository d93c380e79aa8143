// The fused dk/dv reversed sweep (see DkDvParams in chunk_params.h).
//
// One block = one (sequence, head, segment), 8 warps; warp (mt, ch) = (w % 4, w / 4)
// owns rows [16mt, 16mt+16) of the chunk (reversed time) and column half ch of dv and
// of dk. dS [DK, DV] fp32 lives in registers (each warp a 16- or 32-row block), its
// 16-bit copy in shared memory serves both products: dS^T k (ldmatrix.trans) and
// dS v (plain ldmatrix). Per chunk:
//   P1 = mask(K Q^T)  -> dv = lambda^r K dS + P1 dO
//   P2 = mask(V dO^T) -> dk = lambda^r V dS^T + P2 Q
//   dS = lambda^c dS + (w Q)^T dO
#pragma once

#include "chunk_kernel.cuh"

namespace lightning_attn {
namespace cuda {

template <int DK, int DV>
struct DkDvSmem {
  static constexpr int kKPitch = DK + 8, kVPitch = DV + 8;
  static constexpr int kKTile = kChunk * kKPitch, kVTile = kChunk * kVPitch;
  static constexpr int kStage = 2 * kKTile + 2 * kVTile;  // Q, K, V, dO
  static constexpr size_t bytes() { return 2 * (2 * kStage + DK * kVPitch); }
};

// Masked scores of this warp's 16 rows against the chunk's tokens, as 16-bit A
// fragments: lambda^(r-s) * scale * (X_r . Y_s) for s <= r. X, Y: [kChunk, P] tiles.
template <int D, int P, typename TC>
__device__ __forceinline__ void masked_scores(uint32_t (&af)[4][4], const TC* x_s, const TC* y_s,
                                              int mt, int lane, float scale, float l2) {
  const int g = lane / 4, cq = lane % 4, m0 = mt * 16;
  float sc[4][2][4];
#pragma unroll
  for (int pp = 0; pp < 4; ++pp)
#pragma unroll
    for (int hn = 0; hn < 2; ++hn)
#pragma unroll
      for (int e = 0; e < 4; ++e) sc[pp][hn][e] = 0.f;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t a[4];
    ldsm_x4(a, x_s + (m0 + (lane % 16)) * P + kk * 16 + (lane / 16) * 8);
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
          m[hn][e] = s <= r ? sc[pp][hn][e] * scale * exp2f(float(r - s) * l2) : 0.f;
        }
      af[pp][0] = pack2<TC>(m[0][0], m[0][1]);
      af[pp][1] = pack2<TC>(m[0][2], m[0][3]);
      af[pp][2] = pack2<TC>(m[1][0], m[1][1]);
      af[pp][3] = pack2<TC>(m[1][2], m[1][3]);
    }
  }
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

// Stores a warp's [16, NT*8] accumulator tile as rows of a [B, T, H, D] output.
template <int NT, typename TIn>
__device__ __forceinline__ void store_rows(const float (&acc)[NT][4], TIn* ob, int64_t st, int c0,
                                           int D, bool vec2, int m0, int lane, int clen,
                                           int64_t t_base, int64_t start, int64_t len) {
  const int g = lane / 4, cq = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = m0 + g + half * 8;
    if (r < clen) {
      const int64_t t = t_base + r;
      TIn* orow = ob + (start + len - 1 - t) * st;  // reversed time
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

template <int DK, int DV, typename TIn>
__global__ void __launch_bounds__(kWarps * 32) dkdv_kernel(const DkDvParams p) {
  using TC = typename ComputeType<TIn>::type;
  using L = DkDvSmem<DK, DV>;
  constexpr int KP = L::kKPitch, VP = L::kVPitch;
  constexpr int MT = kChunk / 16, CH = kWarps / MT;
  constexpr int NTV = DV / CH / 8, NTK = DK / CH / 8;  // n-tiles of a warp's dv and dk halves
  constexpr int SWM = kWarps < DK / 16 ? kWarps : DK / 16;
  constexpr int SWN = kWarps / SWM;
  constexpr int RROWS = DK / SWM, RM = RROWS / 16, SCOLS = DV / SWN, NS = SCOLS / 8;
  static_assert(RM >= 1 && NTV % 2 == 0 && NTK % 2 == 0 && NS % 2 == 0, "tile shape");

  extern __shared__ __align__(16) unsigned char smem_raw[];
  TC* smem = reinterpret_cast<TC*>(smem_raw);
  auto sQ = [&](int b) { return smem + b * L::kStage; };
  auto sK = [&](int b) { return smem + b * L::kStage + L::kKTile; };
  auto sV = [&](int b) { return smem + b * L::kStage + 2 * L::kKTile; };
  auto sO = [&](int b) { return smem + b * L::kStage + 2 * L::kKTile + L::kVTile; };  // dO
  TC* sR = smem + 2 * L::kStage;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, cq = lane % 4;
  const int mt = warp % MT, ch = warp / MT;
  const int srow0 = (warp % SWM) * RROWS, scol0 = (warp / SWM) * SCOLS;
  const int h = blockIdx.x % p.H, n = blockIdx.x / p.H, seg = blockIdx.y;

  int64_t start, len;
  sequence_range(p.cu32, p.cu64, n, p.T, start, len);
  const int b = (p.cu32 || p.cu64) ? 0 : n;
  const int64_t seg_start = int64_t(seg) * p.seg_len;
  const int64_t seg_tokens = len - seg_start < p.seg_len ? len - seg_start : p.seg_len;
  if (p.nseg > 1 && seg_tokens <= 0) return;
  const int64_t nchunks = seg_tokens > 0 ? (seg_tokens + kChunk - 1) / kChunk : 0;
  const float l2 = log2_lambda(p.slope, h);

  const TIn* qb = static_cast<const TIn*>(p.q) + b * p.q_sb + h * p.q_sh;
  const TIn* kb = static_cast<const TIn*>(p.k) + b * p.k_sb + h * p.k_sh;
  const TIn* vb = static_cast<const TIn*>(p.v) + b * p.v_sb + h * p.v_sh;
  const TIn* db = static_cast<const TIn*>(p.dout) + b * p.do_sb + h * p.do_sh;
  auto load_chunk = [&](int64_t ci, int buf) {
    const int64_t t0 = seg_start + ci * kChunk;
    const int64_t rest = seg_tokens - ci * kChunk;
    const int clen = rest < kChunk ? int(rest) : kChunk;
    load_tile<DK, KP>(sQ(buf), qb, p.q_st, p.Dk, p.q_vec, t0, clen, start, len, true);
    load_tile<DK, KP>(sK(buf), kb, p.k_st, p.Dk, p.k_vec, t0, clen, start, len, true);
    load_tile<DV, VP>(sV(buf), vb, p.v_st, p.Dv, p.v_vec, t0, clen, start, len, true);
    load_tile<DV, VP>(sO(buf), db, p.do_st, p.Dv, p.do_vec, t0, clen, start, len, true);
  };

  float racc[RM][NS][4];
  {
    const float* ib = p.init ? p.init + seg * p.init_sseg + n * p.init_sn + h * p.init_sh : nullptr;
#pragma unroll
    for (int mi = 0; mi < RM; ++mi)
#pragma unroll
      for (int nt = 0; nt < NS; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = srow0 + mi * 16 + g + (e / 2) * 8, j = scol0 + nt * 8 + 2 * cq + (e % 2);
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
  store_state_copy();
  if (nchunks > 0) load_chunk(0, 0);
  cp_async_commit();

  TIn* dkb = static_cast<TIn*>(p.dk) + b * p.dk_sb + h * p.dk_sh;
  TIn* dvb = static_cast<TIn*>(p.dv) + b * p.dv_sb + h * p.dv_sh;
  const int m0 = mt * 16;
  for (int64_t ci = 0; ci < nchunks; ++ci) {
    const int cur = int(ci & 1);
    cp_async_wait_all();
    __syncthreads();
    if (ci + 1 < nchunks) load_chunk(ci + 1, cur ^ 1);
    cp_async_commit();
    const int64_t rest = seg_tokens - ci * kChunk;
    const int clen = rest < kChunk ? int(rest) : kChunk;
    const int64_t t_base = seg_start + ci * kChunk;
    const TC *q_s = sQ(cur), *k_s = sK(cur), *v_s = sV(cur), *o_s = sO(cur);
    const float f0 = exp2f(float(m0 + g) * l2), f1 = exp2f(float(m0 + g + 8) * l2);  // lambda^r

    // ---- dv = lambda^r K dS + mask(K Q^T) dO
    {
      uint32_t af[4][4];
      masked_scores<DK, KP, TC>(af, k_s, q_s, mt, lane, p.scale, l2);
      float acc[NTV][4];
#pragma unroll
      for (int nt = 0; nt < NTV; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DK / 16; ++kk) {
        uint32_t a[4];
        ldsm_x4(a, k_s + (m0 + (lane % 16)) * KP + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < NTV / 2; ++np) {
          uint32_t br[4];
          ldsm_x4_trans(br, sR + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * VP + ch * (DV / CH) + np * 16 + (lane / 16) * 8);
          mma16816<TC>(acc[2 * np], a, br[0], br[1]);
          mma16816<TC>(acc[2 * np + 1], a, br[2], br[3]);
        }
      }
#pragma unroll
      for (int nt = 0; nt < NTV; ++nt) {
        acc[nt][0] *= f0, acc[nt][1] *= f0, acc[nt][2] *= f1, acc[nt][3] *= f1;
      }
      scores_times<NTV, VP, TC>(acc, af, o_s, ch * (DV / CH), mt, lane);
      store_rows<NTV, TIn>(acc, dvb, p.dv_st, ch * (DV / CH), p.Dv, p.dv_vec2, m0, lane, clen, t_base, start, len);
    }
    // ---- dk = lambda^r V dS^T + mask(V dO^T) Q
    {
      uint32_t af[4][4];
      masked_scores<DV, VP, TC>(af, v_s, o_s, mt, lane, p.scale, l2);
      float acc[NTK][4];
#pragma unroll
      for (int nt = 0; nt < NTK; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
      for (int kk = 0; kk < DV / 16; ++kk) {
        uint32_t a[4];
        ldsm_x4(a, v_s + (m0 + (lane % 16)) * VP + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < NTK / 2; ++np) {
          // B[k = dv][n = dk] = dS[n][k]: rows n of the copy, k contiguous -> plain ldmatrix
          uint32_t br[4];
          ldsm_x4(br, sR + (ch * (DK / CH) + np * 16 + (lane / 16) * 8 + lane % 8) * VP + kk * 16 + ((lane / 8) % 2) * 8);
          mma16816<TC>(acc[2 * np], a, br[0], br[1]);
          mma16816<TC>(acc[2 * np + 1], a, br[2], br[3]);
        }
      }
#pragma unroll
      for (int nt = 0; nt < NTK; ++nt) {
        acc[nt][0] *= f0, acc[nt][1] *= f0, acc[nt][2] *= f1, acc[nt][3] *= f1;
      }
      scores_times<NTK, KP, TC>(acc, af, q_s, ch * (DK / CH), mt, lane);
      store_rows<NTK, TIn>(acc, dkb, p.dk_st, ch * (DK / CH), p.Dk, p.dk_vec2, m0, lane, clen, t_base, start, len);
    }
    // ---- dS = lambda^c dS + sum_j scale lambda^(c-j) q_j do_j^T
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
        auto wt = [&](int j) { return j < clen ? p.scale * exp2f(float(clen - j) * l2) : 0.f; };
        const int j0 = kk * 16 + 2 * cq;
        const uint32_t wlo = pack2<TC>(wt(j0), wt(j0 + 1));
        const uint32_t whi = pack2<TC>(wt(j0 + 8), wt(j0 + 9));
        uint32_t bv[NS / 2][4];
#pragma unroll
        for (int np = 0; np < NS / 2; ++np)
          ldsm_x4_trans(bv[np], o_s + (kk * 16 + ((lane / 8) % 2) * 8 + lane % 8) * VP + scol0 + np * 16 + (lane / 16) * 8);
#pragma unroll
        for (int mi = 0; mi < RM; ++mi) {
          uint32_t a[4];
          ldsm_x4_trans(a, q_s + (kk * 16 + (lane / 16) * 8 + lane % 8) * KP + srow0 + mi * 16 + ((lane / 8) % 2) * 8);
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
    __syncthreads();  // every warp has read the old copy of dS
    store_state_copy();
  }
  cp_async_wait_all();

  if (p.out_state != nullptr) {
    float* ob = p.out_state + n * p.out_sn + h * p.out_sh;
#pragma unroll
    for (int mi = 0; mi < RM; ++mi)
#pragma unroll
      for (int nt = 0; nt < NS; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = srow0 + mi * 16 + g + (e / 2) * 8, j = scol0 + nt * 8 + 2 * cq + (e % 2);
          if (i < p.Dk && j < p.Dv) ob[i * p.out_sk + j * p.out_sv] = racc[mi][nt][e];
        }
  }
}

#define LIGHTNING_ATTN_INSTANTIATE_DKDV(DK, DV, TIN)                                           \
  template <>                                                                                  \
  void launch_dkdv<DK, DV, TIN>(const DkDvParams& p, cudaStream_t stream) {                    \
    constexpr size_t smem = DkDvSmem<DK, DV>::bytes();                                         \
    auto kernel = dkdv_kernel<DK, DV, TIN>;                                                    \
    C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem))); \
    const dim3 grid(unsigned(int64_t(p.N) * p.H), unsigned(p.nseg));                          \
    kernel<<<grid, kWarps * 32, smem, stream>>>(p);                                            \
    C10_CUDA_KERNEL_LAUNCH_CHECK();                                                            \
  }                                                                                            \
  template <>                                                                                  \
  int dkdv_blocks_per_sm<DK, DV, TIN>() {                                                      \
    static const int blocks = [] {                                                             \
      constexpr size_t smem = DkDvSmem<DK, DV>::bytes();                                       \
      auto kernel = dkdv_kernel<DK, DV, TIN>;                                                  \
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem))); \
      int n = 0;                                                                               \
      C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kWarps * 32, smem)); \
      return n > 0 ? n : 1;                                                                    \
    }();                                                                                       \
    return blocks;                                                                             \
  }

}  // namespace cuda
}  // namespace lightning_attn
