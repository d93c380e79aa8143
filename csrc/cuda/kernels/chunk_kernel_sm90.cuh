// Hopper (sm_90a) chunk kernel: the recurrence and ChunkParams of chunk_kernel.cuh for
// Dk = Dv = 128 (or 64) and 16-bit inputs, with every product on wgmma (docs/kernels.md).
//
// STATE_ONLY blocks (pass 1 of the sequence split, forward or reversed time) run only the R
// update. One block = one (sequence, head, segment), two warpgroups; warpgroup wg owns the v
// columns [64 wg, 64 wg + 64): its slice of the fp32 state R[128, 64] lives in its
// registers (two m64 accumulator tiles), and per 64-token chunk it runs
//   S  = Q K^T                      (both warpgroups: cheaper than sharing it)
//   O  = diag(qd) Q R + mask(S) V   (mask in registers; S becomes the register A operand)
//   R  = lambda^c R + K^T (w V)     (w V: per-token decay weights, written by the warpgroup)
// with B operands (K, V, the 16-bit copy of R) read by the tensor cores straight from
// 128B-swizzled shared memory. Chunks i+1, i+2 stream in (three stages) while chunk i
// computes: by cp.async from all 256 threads behind one block barrier per chunk, or (TMA:
// forward-time full calls on whole sequences) as bulk tensor copies issued by one
// thread, each warpgroup waiting on the stage's mbarrier and releasing it when done, so the
// two warpgroups are no longer held in lockstep. Where o takes a tensor map (whole sequences,
// forward time), each warp writes its 16 output rows by stmatrix into a staging panel and one
// TMA store (the ACC instance too, after adding the old rows) instead of 16 4-byte stores.
// Full sweeps also store R at the checkpoints they pass (ChunkParams::ckpt).
#pragma once

#include "chunk_kernel.cuh"
#include "sm90_tiles.cuh"
#include "tma_utils.cuh"

namespace lightning_attn {
namespace cuda {

// D = Dk = Dv (128 or 64): D / 64 panels per operand tile and D / 64 warpgroups per
// block (each owns 64 v columns). STATE_ONLY (pass 1 of the sequence split): K, V stages only,
// two of them, no copy of R, so that two blocks fit on an SM. ACC (o += result, D = 128 only):
// the old O rows are a fourth tile of each stage, two stages to stay inside shared memory.
template <int D, bool STATE_ONLY, bool ACC = false, bool TMA = false>
struct Sm90Smem {
  static constexpr int kP = D / 64;                          // panels per tile = warpgroups per block
  static constexpr int kStages = (STATE_ONLY || ACC) ? 2 : 3;
  static constexpr int kPanel = kPanelBytes;                 // 64 rows x 64 columns: 8 KB
  static constexpr int kTile = kP * kPanel;                  // [64, D] operand tile
  static constexpr int kK = STATE_ONLY ? 0 : kTile;          // tile offsets in a stage: [Q] K V [O]
  static constexpr int kV = kK + kTile;
  static constexpr int kO = kV + kTile;
  static constexpr int kStage = kO + (ACC ? kTile : 0);
  static constexpr int kVw = kPanel;                         // w V of one warpgroup
  static constexpr int kR = STATE_ONLY ? 0 : kP * kPanel;    // 16-bit R[D, 64] of one warpgroup
  static constexpr int kOst = (TMA || ACC) ? kPanel : 0;     // TMA store: O rows of one warpgroup, staged
  static constexpr int kFixed = kStages * kStage + kP * kVw + kP * kR + kP * kOst;
  static constexpr int kBars = kFixed;                       // TMA: full[kStages], empty[kStages]
  static constexpr size_t bytes = 1024 + kFixed + 2 * kStages * 8;  // + slack to align the base to 1024
};

template <typename TIn, int D, bool STATE_ONLY, bool ACC = false, bool TMA = false>
__global__ void __launch_bounds__(D * 2, (STATE_ONLY || D == 64) ? 2 : 1)
    chunk_kernel_sm90(const ChunkParams p, const __grid_constant__ TmaMaps maps) {
  static_assert(!TMA || !(STATE_ONLY || ACC), "TMA: full forward-time calls without ACC only");
  static_assert(D == 64 || D == 128, "D = Dk = Dv of 64 or 128");
  static_assert(!ACC || D == 128, "ACC: the 128-wide pieces of Dk = 256");
#ifdef LIGHTNING_ATTN_SM90A
  using TC = TIn;
  using L = Sm90Smem<D, STATE_ONLY, ACC, TMA>;
  constexpr int KP = L::kP;
  extern __shared__ __align__(1024) unsigned char smem_sm90[];
  // 1024-byte aligned base (swizzle atoms), by an offset so the compiler keeps shared-space accesses
  unsigned char* smem = smem_sm90 + ((1024 - (smem_addr(smem_sm90) & 1023)) & 1023);

  const int wg = threadIdx.x / 128, warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int col0 = wg * 64;
  unsigned char* sVw = smem + L::kStages * L::kStage + wg * L::kVw;
  unsigned char* sR = smem + L::kStages * L::kStage + KP * L::kVw + wg * L::kR;
  unsigned char* sOst = smem + L::kStages * L::kStage + KP * L::kVw + KP * L::kR + wg * L::kOst;
  auto stage = [&](int buf) { return smem + buf * L::kStage; };

  const int h = blockIdx.x % p.H, n = blockIdx.x / p.H;
  const int seg = blockIdx.y;
  SegmentSpan sp;
  if (!segment_span(p, n, seg, sp)) return;  // empty segment of a split call: the whole block returns
  const float l2 = log2_lambda(p.slope, h);

  // q, o: null in state-only calls
  const TIn* qb = STATE_ONLY ? nullptr : head_base<const TIn>(p.q, sp.b, p.q_sb, h, p.q_sh);
  const TIn* kb = head_base<const TIn>(p.k, sp.b, p.k_sb, h, p.k_sh);
  const TIn* vb = head_base<const TIn>(p.v, sp.b, p.v_sb, h, p.v_sh);
  TIn* ob = STATE_ONLY ? nullptr : head_base<TIn>(p.o, sp.b, p.o_sb, h, p.o_sh);

  const PanelLoader<KP> loader;
  const int dir = p.reverse ? -1 : 1;  // logical time t -> row start + t, or start + len - 1 - t
  auto first_row = [&](int64_t ci) {
    const int64_t t0 = sp.seg_start + ci * kChunk;
    return p.reverse ? sp.start + sp.len - 1 - t0 : sp.start + t0;
  };
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + L::kBars);  // TMA: chunk landed in the stage
  uint64_t* empty = full + L::kStages;                               // TMA: both warpgroups done with it
  // TMA: q, k, v of chunk ci into stage buf, issued by thread 0 (rows past T zero-filled)
  auto tma_chunk = [&](int64_t ci, int buf) {
    unsigned char* st = stage(buf);
    const int t = int(first_row(ci));
    mbar_arrive_expect_tx(&full[buf], uint32_t(3 * L::kTile));
#pragma unroll
    for (int c = 0; c < KP; ++c) {
      tma_load_panel(st + c * L::kPanel, &maps.q, &full[buf], 64 * c, h, t, sp.b);
      tma_load_panel(st + L::kK + c * L::kPanel, &maps.k, &full[buf], 64 * c, h, t, sp.b);
      tma_load_panel(st + L::kV + c * L::kPanel, &maps.v, &full[buf], 64 * c, h, t, sp.b);
    }
  };
  auto load_chunk = [&](int64_t ci, int buf) {
    const int64_t first = first_row(ci);
    const int clen = chunk_tokens(sp, ci);
    const uint32_t tile = smem_addr(stage(buf));
    if constexpr (!STATE_ONLY) loader.load(tile, qb, p.q_st, first, dir, clen);
    loader.load(tile + L::kK, kb, p.k_st, first, dir, clen);
    loader.load(tile + L::kV, vb, p.v_st, first, dir, clen);
    if constexpr (ACC) loader.load(tile + L::kO, static_cast<const TIn*>(ob), p.o_st, first, dir, clen);
  };

  // ---- this warpgroup's state slice R[D, 64]: m-tile mt holds rows [64 mt, 64 mt + 64)
  float racc[KP][8][4];
  auto slice = [&](int mt) -> float(&)[1][8][4] { return reinterpret_cast<float(&)[1][8][4]>(racc[mt]); };
  const float* init = STATE_ONLY ? p.init.at(seg, n, h) : p.init.row_at(seg, n, h);
#pragma unroll
  for (int mt = 0; mt < KP; ++mt)
    load_state(slice(mt), init, p.init.sk, p.init.sv, p.init.spx, mt * 64 + warp * 16, col0, p.Dk, p.Dv, lane);

  // 16-bit copy of R (MN-major B operand of Q R: row = k index, 64 v columns along the row)
  auto store_state_copy = [&]() {
    if constexpr (!STATE_ONLY) store_state_panel<TC>(sR, racc, warp, lane);
  };
  store_state_copy();

  if constexpr (TMA) {
    if (threadIdx.x == 0) {
#pragma unroll
      for (int s = 0; s < L::kStages; ++s) {
        mbar_init(&full[s], 1);
        mbar_init(&empty[s], D * 2);
      }
    }
    __syncthreads();  // barriers initialised (the only block-wide barrier)
    if (threadIdx.x == 0) {
#pragma unroll
      for (int s = 0; s < L::kStages - 1; ++s)
        if (s < sp.nchunks) tma_chunk(s, s);
    }
  } else {
#pragma unroll
    for (int s = 0; s < L::kStages - 1; ++s) {
      if (s < sp.nchunks) load_chunk(s, s);
      cp_async_commit();
    }
  }

  for (int64_t ci = 0; ci < sp.nchunks; ++ci) {
    if constexpr (TMA) {
      // the stage of chunk ci + 2 last held chunk ci - 1: reuse it once both warpgroups released it
      const int64_t next = ci + L::kStages - 1;
      if (threadIdx.x == 0 && next < sp.nchunks) {
        if (ci >= 1) mbar_wait(&empty[(ci - 1) % L::kStages], uint32_t(((ci - 1) / L::kStages) & 1));
        tma_chunk(next, int(next % L::kStages));
      }
      mbar_wait(&full[ci % L::kStages], uint32_t((ci / L::kStages) & 1));
      __syncwarp();                // converged again for the aligned barrier and wgmma
      named_barrier(1 + wg, 128);  // the warpgroup's R copy and w V of chunk ci-1 are settled
    } else {
      cp_async_wait<L::kStages - 2>();
      fence_proxy_async();
      __syncthreads();  // chunk ci landed for every thread; everyone is done with chunk ci-1
      if (ci + L::kStages - 1 < sp.nchunks) load_chunk(ci + L::kStages - 1, int((ci + L::kStages - 1) % L::kStages));
      cp_async_commit();
    }

    const int clen = chunk_tokens(sp, ci);
    unsigned char* sQ = stage(int(ci % L::kStages));
    unsigned char* sK = sQ + L::kK;
    unsigned char* sV = sQ + L::kV;

    if constexpr (STATE_ONLY) {
      weight_panel_rows<TC>(sVw, sV + wg * L::kPanel, clen, p.scale_upd, p.koff, l2);
      scale_state(racc, exp2f(float(clen) * l2));
      named_barrier(1 + wg, 128);  // w V written by the whole warpgroup
      wgmma_fence();
      issue_state_update<TC>(racc, sK, sVw);
      wgmma_commit();
      wgmma_wait<0>();
#pragma unroll
      for (int mt = 0; mt < KP; ++mt) fence_regs(racc[mt]);
      continue;
    }

    // -- S = Q K^T and O = Q R (K-major Q and K; R MN-major), one commit group
    float sacc[8][4], oacc[8][4];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4 * KP; ++kk) wgmma_ss<TC, 0, 0>(sacc, kmajor_desc(sQ, kk), kmajor_desc(sK, kk), kk);
#pragma unroll
    for (int kk = 0; kk < 4 * KP; ++kk)
      wgmma_ss<TC, 0, 1>(oacc, kmajor_desc(sQ, kk), mnmajor_desc(sR, kk), kk);
    wgmma_commit();

    // -- w V for this warpgroup's columns while the tensor cores work
    weight_panel_rows<TC>(sVw, sV + wg * L::kPanel, clen, p.scale_upd, p.koff, l2);
    wgmma_wait<0>();
    fence_regs(sacc);
    fence_regs(oacc);

    // -- decay mask -> A fragments
    uint32_t af[4][4];
    masked_afrag<TC>(af, sacc, warp, lane, p.scale_intra, l2);
    scale_rows<8>(oacc, p.scale_state * exp2f(float(warp * 16 + g + p.qoff) * l2),
                  p.scale_state * exp2f(float(warp * 16 + g + 8 + p.qoff) * l2));
    scale_state(racc, exp2f(float(clen) * l2));
    named_barrier(1 + wg, 128);  // w V written by the whole warpgroup

    // -- O += mask(S) V; R += K^T (w V)   (V, w V: MN-major; K^T: M-major)
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs<TC, 1>(oacc, af[kk], mnmajor_desc(sV + wg * L::kPanel, kk), 1);
    wgmma_commit();
    issue_state_update<TC>(racc, sK, sVw);
    wgmma_commit();

    wgmma_wait<1>();
    fence_regs(oacc);
    if constexpr (ACC) add_panel_rows<TIn>(oacc, sQ + L::kO + wg * L::kPanel, warp, lane);  // o += result
    if ((TMA || ACC) && p.tma_store) {
      // this warp's 16 rows: stmatrix into the staging panel, one TMA store
      if (lane == 0) tma_store_wait<true>();  // the warp's rows of chunk ci-1 have been read
      __syncwarp();
      stage_rows_stmatrix<TC, false>(sOst, oacc, warp, lane);
      fence_proxy_async();
      __syncwarp();
      if (lane == 0)
        tma_store_panel(&maps.o, sOst + warp * 16 * kPanelRowBytes, col0, h, int(first_row(ci)) + warp * 16, sp.b);
    } else {
      store_rows_pairs<TIn>(oacc, ob, p.o_st, col0, warp, lane, clen, first_row(ci), dir);
    }
    wgmma_wait<0>();
#pragma unroll
    for (int mt = 0; mt < KP; ++mt) fence_regs(racc[mt]);
    if constexpr (TMA) mbar_arrive(&empty[ci % L::kStages]);  // this thread is done with the stage
    if (float* c = checkpoint_at(p, sp.seg_start + ci * kChunk + clen, n, h)) {
#pragma unroll
      for (int mt = 0; mt < KP; ++mt)
        save_state(slice(mt), c, p.ckpt.sk, p.ckpt.sv, p.ckpt.spx, mt * 64 + warp * 16, col0, p.Dk, p.Dv, lane);
    }
    store_state_copy();
  }
  cp_async_wait_all();
  if ((TMA || ACC) && p.tma_store && lane == 0) tma_store_wait<false>();  // staged rows read and written before exit

  if (float* dst = STATE_ONLY ? p.out_state.at(seg, n, h) : p.out_state.row_at(seg, n, h)) {
#pragma unroll
    for (int mt = 0; mt < KP; ++mt)
      save_state(slice(mt), dst, p.out_state.sk, p.out_state.sv, p.out_state.spx, mt * 64 + warp * 16, col0, p.Dk, p.Dv, lane);
  }
#endif
}

template <typename TIn, int D, bool STATE_ONLY, bool ACC, bool TMA>
void launch_chunk_sm90(const ChunkParams& p, const TmaMaps& maps, cudaStream_t stream) {
  auto kernel = chunk_kernel_sm90<TIn, D, STATE_ONLY, ACC, TMA>;
  const int smem = int(Sm90Smem<D, STATE_ONLY, ACC, TMA>::bytes);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(unsigned(int64_t(p.N) * p.H), unsigned(p.nseg));
  kernel<<<grid, D * 2, smem, stream>>>(p, maps);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Blocks per SM on the current device; 0 where it cannot load this build's sm_90a code.
template <typename TIn, int D, bool STATE_ONLY, bool ACC, bool TMA>
int chunk_sm90_blocks_per_sm() {
  auto kernel = chunk_kernel_sm90<TIn, D, STATE_ONLY, ACC, TMA>;
  if (!sm90_binary(kernel)) return 0;
  const int smem = int(Sm90Smem<D, STATE_ONLY, ACC, TMA>::bytes);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  int n = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, D * 2, smem));
  return n;
}

// The launchers of one instance, for instantiations/.
#define LIGHTNING_ATTN_INSTANTIATE_SM90_CHUNK(TIN, D, STATE_ONLY, ACC, TMA)                                  \
  template void launch_chunk_sm90<TIN, D, STATE_ONLY, ACC, TMA>(const ChunkParams&, const TmaMaps&, cudaStream_t); \
  template int chunk_sm90_blocks_per_sm<TIN, D, STATE_ONLY, ACC, TMA>();

}  // namespace cuda
}  // namespace lightning_attn
