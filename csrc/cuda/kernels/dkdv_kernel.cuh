// The fused dk/dv reversed sweep (see DkDvParams in params.h).
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
#include "warp_tiles.cuh"

namespace lightning_attn {
namespace cuda {

template <int DK, int DV>
struct DkDvSmem {
  static constexpr int kKPitch = DK + 8, kVPitch = DV + 8;
  static constexpr int kKTile = kChunk * kKPitch, kVTile = kChunk * kVPitch;
  static constexpr int kStage = 2 * kKTile + 2 * kVTile;  // Q, K, V, dO
  static constexpr size_t bytes() { return 2 * (2 * kStage + DK * kVPitch); }
};

// One output of the sweep for this warp's 16 rows: out = lambda^r X dS (dS^T where TRANS) +
// mask(X Y^T) Z, with (X, Y, Z, out) = (K, Q, dO, dv) and (V, dO, Q, dk). X and Y share the
// pitch XP; the 16-bit copy of dS has pitch SP; the warp writes NT n-tiles from column c0.
template <int DX, int XP, int NT, int ZP, int SP, bool TRANS, typename TC, typename TIn>
__device__ __forceinline__ void sweep_output(const TC* x_s, const TC* y_s, const TC* z_s, const TC* sR, TIn* outb,
                                             int64_t out_st, int out_dim, bool out_vec2, int c0, int mt, int lane,
                                             float scale, float l2, float f0, float f1, int clen, int64_t t_base,
                                             int64_t start, int64_t len) {
  const int m0 = mt * 16;
  uint32_t xf[4];  // A fragment of the current k-step of this warp's 16 rows of X
  auto x_frag = [&](int kk) -> const uint32_t(&)[4] {
    ldsm_x4(xf, x_s + (m0 + (lane % 16)) * XP + kk * 16 + (lane / 16) * 8);
    return xf;
  };
  uint32_t af[4][4];
  masked_scores<DX / 16, XP, TC>(af, x_frag, y_s, mt, lane, scale, l2);
  float acc[NT][4];
  times_state<DX / 16, NT, SP, TRANS, TC>(acc, x_frag, sR, c0, lane);
  scale_rows(acc, f0, f1);
  scores_times<NT, ZP, TC>(acc, af, z_s, c0, mt, lane);
  store_rows<NT, TIn>(acc, outb, out_st, c0, out_dim, out_vec2, m0, lane, clen, t_base, start, len,
                      /*reverse=*/true);
}

template <int DK, int DV, typename TIn>
__global__ void __launch_bounds__(kWarps * 32) dkdv_kernel(const DkDvParams p) {
  using TC = typename ComputeType<TIn>::type;
  using L = DkDvSmem<DK, DV>;
  constexpr int KP = L::kKPitch, VP = L::kVPitch;
  constexpr int MT = kChunk / 16, CH = kWarps / MT;
  constexpr int NTV = DV / CH / 8, NTK = DK / CH / 8;  // n-tiles of a warp's dv and dk halves
  constexpr int SWM = state_row_warps<DK>();
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
  const int g = lane / 4;
  const int mt = warp % MT, ch = warp / MT;
  const int srow0 = (warp % SWM) * RROWS, scol0 = (warp / SWM) * SCOLS;
  const int h = blockIdx.x % p.H, n = blockIdx.x / p.H, seg = blockIdx.y;

  SegmentSpan sp;
  if (!segment_span(p, n, seg, sp)) return;  // empty segment of a split call: the whole block returns
  const int64_t start = sp.start, len = sp.len, seg_start = sp.seg_start;
  const int64_t nchunks = sp.nchunks;
  const int b = sp.b;
  const float l2 = log2_lambda(p.slope, h);

  const BackwardInputs<TIn> in = backward_inputs<TIn>(p, b, h);
  auto load_chunk = [&](int64_t ci, int buf) {
    const int64_t t0 = seg_start + ci * kChunk;
    const int clen = chunk_tokens(sp, ci);
    load_tile<DK, KP>(sQ(buf), in.q, p.q_st, p.Dk, p.q_vec, t0, clen, start, len, true);
    load_tile<DK, KP>(sK(buf), in.k, p.k_st, p.Dk, p.k_vec, t0, clen, start, len, true);
    load_tile<DV, VP>(sV(buf), in.v, p.v_st, p.Dv, p.v_vec, t0, clen, start, len, true);
    load_tile<DV, VP>(sO(buf), in.dout, p.do_st, p.Dv, p.do_vec, t0, clen, start, len, true);
  };

  float racc[RM][NS][4];
  load_state(racc, p.init.at(seg, n, h),
             p.init.sk, p.init.sv, p.init.spx, srow0, scol0, p.Dk, p.Dv, lane);
  auto store_state_copy = [&]() { cuda::store_state_copy<RM, NS, VP>(racc, sR, srow0, scol0, lane); };
  store_state_copy();
  if (nchunks > 0) load_chunk(0, 0);
  cp_async_commit();

  TIn* dkb = head_base<TIn>(p.dk, b, p.dk_sb, h, p.dk_sh);
  TIn* dvb = head_base<TIn>(p.dv, b, p.dv_sb, h, p.dv_sh);
  const int m0 = mt * 16;
  for (int64_t ci = 0; ci < nchunks; ++ci) {
    const int cur = int(ci & 1);
    cp_async_wait_all();
    __syncthreads();
    if (ci + 1 < nchunks) load_chunk(ci + 1, cur ^ 1);
    cp_async_commit();
    const int clen = chunk_tokens(sp, ci);
    const int64_t t_base = seg_start + ci * kChunk;
    const TC *q_s = sQ(cur), *k_s = sK(cur), *v_s = sV(cur), *o_s = sO(cur);
    const float f0 = exp2f(float(m0 + g) * l2), f1 = exp2f(float(m0 + g + 8) * l2);  // lambda^r
    // ---- dv = lambda^r K dS + mask(K Q^T) dO, then dk = lambda^r V dS^T + mask(V dO^T) Q
    sweep_output<DK, KP, NTV, VP, VP, false>(k_s, q_s, o_s, sR, dvb, p.dv_st, p.Dv, p.dv_vec2, ch * (DV / CH), mt,
                                            lane, p.scale, l2, f0, f1, clen, t_base, start, len);
    sweep_output<DV, VP, NTK, KP, VP, true>(v_s, o_s, q_s, sR, dkb, p.dk_st, p.Dk, p.dk_vec2, ch * (DK / CH), mt,
                                           lane, p.scale, l2, f0, f1, clen, t_base, start, len);
    // ---- dS = lambda^c dS + sum_j scale lambda^(c-j) q_j do_j^T
    update_state<RM, NS, KP, VP, TC>(racc, q_s, o_s, srow0, scol0, clen, p.scale, /*koff=*/1, l2, lane);
    __syncthreads();  // every warp has read the old copy of dS
    store_state_copy();
  }
  cp_async_wait_all();

  if (p.out_state)
    save_state(racc, p.out_state.at(0, n, h), p.out_state.sk, p.out_state.sv, 0, srow0, scol0, p.Dk, p.Dv,
               lane);
}

template <int DK, int DV, typename TIn>
void launch_dkdv_portable(const DkDvParams& p, cudaStream_t stream) {
  constexpr size_t smem = DkDvSmem<DK, DV>::bytes();
  auto kernel = dkdv_kernel<DK, DV, TIn>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned(int64_t(p.N) * p.H), unsigned(p.nseg));
  kernel<<<grid, kWarps * 32, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <int DK, int DV, typename TIn>
int dkdv_portable_blocks_per_sm() {
  constexpr size_t smem = DkDvSmem<DK, DV>::bytes();
  auto kernel = dkdv_kernel<DK, DV, TIn>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  int n = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, kWarps * 32, smem));
  return n > 0 ? n : 1;
}

// The launchers of one (padded Dk, padded Dv, input type), for instantiations/.
#define LIGHTNING_ATTN_INSTANTIATE_DKDV(DK, DV, TIN)                                \
  template void launch_dkdv_portable<DK, DV, TIN>(const DkDvParams&, cudaStream_t); \
  template int dkdv_portable_blocks_per_sm<DK, DV, TIN>();

}  // namespace cuda
}  // namespace lightning_attn
