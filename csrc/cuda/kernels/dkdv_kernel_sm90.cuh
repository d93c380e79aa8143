// Hopper (sm_90a) fused dk/dv reversed sweep: DkDvParams and the recurrence of
// dkdv_kernel.cuh for Dk = Dv = 128 or 64 and 16-bit inputs, products on wgmma.
//
// One block = one (sequence, head, segment), two warpgroups. Warpgroup 0 computes dv, warpgroup
// 1 dk; at D = 128 each keeps the half of dS[128, 128] with v columns [64 wg, 64 wg + 64) in
// registers, at D = 64 warpgroup 0 keeps all of dS[64, 64].
// Per chunk (reversed time), with X, Y, Z = (K, Q, dO) for warpgroup 0 and (V, dO, Q) for 1:
//   P   = mask(X Y^T)
//   out = diag(lambda^r) X dS (wg 0) or X dS^T (wg 1) + P Z
//   dS[:, half] = lambda^c dS[:, half] + Q^T (w dO[:, half])
// One 16-bit copy of dS serves both state products: MN-major for X dS, K-major for X dS^T.
// Chunk i+1 streams in by cp.async (two stages of Q, K, V, dO) while chunk i computes. On whole
// sequences each warp writes its 16 rows of dv (or dk) by stmatrix into a staging panel, rows
// flipped to natural time order, and two TMA stores instead of 32 4-byte stores.
#pragma once

#include "dkdv_kernel.cuh"
#include "sm90_tiles.cuh"
#include "tma_utils.cuh"

namespace lightning_attn {
namespace cuda {

template <int D>
struct DkDvSm90Smem {
  static constexpr int kP = D / 64;               // panels per operand tile = warpgroups owning dS columns
  static constexpr int kStages = 2;
  static constexpr int kTile = kP * kPanelBytes;  // [64, D] operand tile
  static constexpr int kStage = 4 * kTile;        // Q, K, V, dO of one chunk
  static constexpr int kW = kPanelBytes;          // w dO of one owning warpgroup
  static constexpr int kS = kP * kPanelBytes;     // 16-bit dS[D, 64] of one owning warpgroup
  static constexpr int kOst = kP * kPanelBytes;   // TMA store: [64, D] output rows of one warpgroup
  static constexpr size_t bytes = 1024 + kStages * kStage + kP * kW + kP * kS + 2 * kOst;
};

// The sweep of warpgroup WG (0: dv, 1: dk). Both warpgroups run it in lockstep (barrier 0 over
// all 256 threads); making WG a template parameter keeps every wgmma out of divergent code.
// D = Dk = Dv: 128 (each warpgroup owns 64 dS columns), or 64 (warpgroup 0 owns all of
// dS[64, 64]; warpgroup 1 only reads its copy).
template <int WG, int D, typename TIn, bool TMA_STORE>
__device__ __forceinline__ void dkdv_sweep_sm90(const DkDvParams& p, const CUtensorMap* out_map, unsigned char* smem,
                                                int h, int n, int seg) {
  using TC = TIn;
  using L = DkDvSm90Smem<D>;
  constexpr int KP = L::kP;
  constexpr bool OWNS = WG < KP;  // this warpgroup keeps (and updates) dS columns [64 WG, 64 WG + 64)
  const int warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
  const int g = lane / 4;
  unsigned char* sW = smem + L::kStages * L::kStage + WG * L::kW;
  unsigned char* sS = smem + L::kStages * L::kStage + KP * L::kW;  // panel of owner w at w * kS
  unsigned char* sOst = smem + L::kStages * L::kStage + KP * L::kW + KP * L::kS + WG * L::kOst;
  auto stage = [&](int buf) { return smem + buf * L::kStage; };
  auto sync_all = [] { asm volatile("bar.sync 0, 256;\n" ::: "memory"); };

  SegmentSpan sp;
  if (!segment_span(p, n, seg, sp)) return;  // empty segment of a split call: the whole block returns
  const float l2 = log2_lambda(p.slope, h);

  const BackwardInputs<TIn> in = backward_inputs<TIn>(p, sp.b, h);
  TIn* outb = WG == 0 ? head_base<TIn>(p.dv, sp.b, p.dv_sb, h, p.dv_sh)
                      : head_base<TIn>(p.dk, sp.b, p.dk_sb, h, p.dk_sh);
  const int64_t out_st = WG == 0 ? p.dv_st : p.dk_st;

  // D = 128: all 256 threads load each [64, 128] tile; D = 64: a warpgroup's 128 threads load a
  // [64, 64] tile, warpgroup 0 Q and K, warpgroup 1 V and dO
  const PanelLoader<KP> loader(KP == 2 ? int(threadIdx.x) : int(threadIdx.x % 128));
  // logical (reversed) time t -> row start + len - 1 - t
  auto last_row = [&](int64_t ci) { return sp.start + sp.len - 1 - (sp.seg_start + ci * kChunk); };
  auto load_chunk = [&](int64_t ci, int buf) {
    const int clen = chunk_tokens(sp, ci);
    const uint32_t tile = smem_addr(stage(buf));
    const int64_t first = last_row(ci);
    if (KP == 2 || WG == 0) {
      loader.load(tile, in.q, p.q_st, first, -1, clen);
      loader.load(tile + L::kTile, in.k, p.k_st, first, -1, clen);
    }
    if (KP == 2 || WG == 1) {
      loader.load(tile + 2 * L::kTile, in.v, p.v_st, first, -1, clen);
      loader.load(tile + 3 * L::kTile, in.dout, p.do_st, first, -1, clen);
    }
  };

  // ---- this warpgroup's dS columns (owners only; rows: k index, m-tile mt = rows 64 mt..)
  float racc[KP][8][4];
  auto slice = [&](int mt) -> float(&)[1][8][4] { return reinterpret_cast<float(&)[1][8][4]>(racc[mt]); };
  if constexpr (OWNS) {
    const float* init = p.init.at(seg, n, h);
#pragma unroll
    for (int mt = 0; mt < KP; ++mt)
      load_state(slice(mt), init, p.init.sk, p.init.sv, p.init.spx, mt * 64 + warp * 16, WG * 64, p.Dk, p.Dv, lane);
    store_state_panel<TC>(sS + WG * L::kS, racc, warp, lane);
  }

  if (sp.nchunks > 0) load_chunk(0, 0);
  cp_async_commit();

  for (int64_t ci = 0; ci < sp.nchunks; ++ci) {
    cp_async_wait<0>();
    fence_proxy_async();
    sync_all();  // chunk ci and every dS panel are in place; chunk ci-1's stage is free
    if (ci + 1 < sp.nchunks) load_chunk(ci + 1, int((ci + 1) & 1));
    cp_async_commit();

    const int clen = chunk_tokens(sp, ci);
    unsigned char* sQ = stage(int(ci & 1));
    unsigned char* sO = sQ + 3 * L::kTile;
    const unsigned char* X = sQ + (WG == 0 ? 1 : 2) * L::kTile;  // K or V
    const unsigned char* Y = WG == 0 ? sQ : sO;
    const unsigned char* Z = WG == 0 ? sO : sQ;

    // -- P = X Y^T and the state product, one commit group; acc[c]: output columns 64 c..
    float pacc[8][4], acc[KP][8][4];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4 * KP; ++kk) wgmma_ss<TC, 0, 0>(pacc, kmajor_desc(X, kk), kmajor_desc(Y, kk), kk);
#pragma unroll
    for (int c = 0; c < KP; ++c) {
      if constexpr (WG == 0) {  // K dS: B = owner c's dS panel as MN-major [Dk, 64]
#pragma unroll
        for (int kk = 0; kk < 4 * KP; ++kk)
          wgmma_ss<TC, 0, 1>(acc[c], kmajor_desc(X, kk), mnmajor_desc(sS + c * L::kS, kk), kk);
      } else {  // V dS^T: B[k = v column, n = k row] = rows 64 c.. of every owner's panel, K-major
#pragma unroll
        for (int kk = 0; kk < 4 * KP; ++kk)
          wgmma_ss<TC, 0, 0>(acc[c], kmajor_desc(X, kk), kmajor_desc(sS + c * 64 * kPanelRowBytes, kk, D), kk);
      }
    }
    wgmma_commit();

    // -- w dO for this warpgroup's dS columns while the tensor cores work (w_r = scale lambda^(clen - r))
    if constexpr (OWNS) weight_panel_rows<TC>(sW, sO + WG * kPanelBytes, clen, p.scale, 1, l2);

    wgmma_wait<0>();
    fence_regs(pacc);
#pragma unroll
    for (int c = 0; c < KP; ++c) fence_regs(acc[c]);

    uint32_t af[4][4];
    masked_afrag<TC>(af, pacc, warp, lane, p.scale, l2);
    const float f0 = exp2f(float(warp * 16 + g) * l2), f1 = exp2f(float(warp * 16 + g + 8) * l2);  // lambda^r
#pragma unroll
    for (int c = 0; c < KP; ++c) scale_rows<8>(acc[c], f0, f1);
    if constexpr (OWNS) scale_state(racc, exp2f(float(clen) * l2));
    named_barrier(1 + WG, 128);  // w dO written by the whole warpgroup

    // -- out += P Z; dS columns += Q^T (w dO columns)
    wgmma_fence();
#pragma unroll
    for (int c = 0; c < KP; ++c)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) wgmma_rs<TC, 1>(acc[c], af[kk], mnmajor_desc(Z + c * kPanelBytes, kk), 1);
    wgmma_commit();
    if constexpr (OWNS) issue_state_update<TC>(racc, sQ, sW);
    wgmma_commit();

    wgmma_wait<1>();
#pragma unroll
    for (int c = 0; c < KP; ++c) fence_regs(acc[c]);
    const int64_t first = last_row(ci);
    // tile rows 16 warp .. 16 warp + 15 = times first - 16 warp .. first - 16 warp - 15: the box
    // starts at the latter; a box that would start before time 0 (the partial chunk at the
    // sequence's start) is stored by rows instead: TMA stores with negative box starts fault
    // (illegal instruction)
    const int tbox = int(first) - warp * 16 - 15;
    const bool add = WG == 0 && p.dv_accumulate;  // dv += (the second k piece of Dk = 256)
    if (TMA_STORE && tbox >= 0) {
      if (lane == 0) tma_store_wait<true>();  // the warp's rows of chunk ci-1 have been read
      __syncwarp();
#pragma unroll
      for (int c = 0; c < KP; ++c) stage_rows_stmatrix<TC, true>(sOst + c * kPanelBytes, acc[c], warp, lane);
      fence_proxy_async();
      __syncwarp();
      if (lane == 0) {
#pragma unroll
        for (int c = 0; c < KP; ++c)
          tma_store_panel(out_map, sOst + c * kPanelBytes + warp * 16 * kPanelRowBytes, 64 * c, h, tbox, sp.b, add);
      }
    } else {
#pragma unroll
      for (int c = 0; c < KP; ++c)
        store_rows_pairs<TIn>(acc[c], outb, out_st, 64 * c, warp, lane, clen, first, -1, add);
    }
    wgmma_wait<0>();
    if constexpr (OWNS) {
#pragma unroll
      for (int mt = 0; mt < KP; ++mt) fence_regs(racc[mt]);
    }
    sync_all();  // both warpgroups are done reading the old dS copy
    if constexpr (OWNS) store_state_panel<TC>(sS + WG * L::kS, racc, warp, lane);
  }
  cp_async_wait_all();
  if (TMA_STORE && lane == 0) tma_store_wait<false>();  // staged rows read and written before exit

  if constexpr (OWNS) {
    if (p.out_state) {
      float* dst = p.out_state.at(0, n, h);
#pragma unroll
      for (int mt = 0; mt < KP; ++mt)
        save_state(slice(mt), dst, p.out_state.sk, p.out_state.sv, 0, mt * 64 + warp * 16, WG * 64, p.Dk, p.Dv, lane);
    }
  }
}

// One block per SM at either D. D = 64: 211 registers; capped at 128 for two blocks per
// SM it spilled 280-316 bytes and measured 7% slower (fwd+bwd 0.594 against 0.553 ms at 4K).
template <int D, typename TIn, bool TMA_STORE>
__global__ void __launch_bounds__(256, 1)
    dkdv_kernel_sm90(const DkDvParams p, const __grid_constant__ DkDvMaps maps) {
#ifdef LIGHTNING_ATTN_SM90A
  extern __shared__ __align__(1024) unsigned char smem_dkdv90[];
  unsigned char* smem = smem_dkdv90 + ((1024 - (smem_addr(smem_dkdv90) & 1023)) & 1023);
  const int h = blockIdx.x % p.H, n = blockIdx.x / p.H, seg = blockIdx.y;
  if (threadIdx.x < 128)
    dkdv_sweep_sm90<0, D, TIn, TMA_STORE>(p, &maps.dv, smem, h, n, seg);
  else
    dkdv_sweep_sm90<1, D, TIn, TMA_STORE>(p, &maps.dk, smem, h, n, seg);
#endif
}

template <typename TIn, int D, bool TMA_STORE>
void launch_dkdv_sm90(const DkDvParams& p, const DkDvMaps& maps, cudaStream_t stream) {
  auto kernel = dkdv_kernel_sm90<D, TIn, TMA_STORE>;
  const int smem = int(DkDvSm90Smem<D>::bytes);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(unsigned(int64_t(p.N) * p.H), unsigned(p.nseg));
  kernel<<<grid, 256, smem, stream>>>(p, maps);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Blocks per SM on the current device (both instances use the same resources); 0 where it
// cannot load this build's sm_90a code.
template <typename TIn, int D>
int dkdv_sm90_blocks_per_sm() {
  auto kernel = dkdv_kernel_sm90<D, TIn, false>;
  if (!sm90_binary(kernel)) return 0;
  const int smem = int(DkDvSm90Smem<D>::bytes);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int n = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, 256, smem));
  return n;
}

// The launchers of one (D, 16-bit input type), for instantiations/.
#define LIGHTNING_ATTN_INSTANTIATE_SM90_DKDV(TIN, D)                                          \
  template void launch_dkdv_sm90<TIN, D, false>(const DkDvParams&, const DkDvMaps&, cudaStream_t); \
  template void launch_dkdv_sm90<TIN, D, true>(const DkDvParams&, const DkDvMaps&, cudaStream_t);  \
  template int dkdv_sm90_blocks_per_sm<TIN, D>();

}  // namespace cuda
}  // namespace lightning_attn
