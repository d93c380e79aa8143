// Hopper (sm_90a) chunk kernel: the recurrence and ChunkParams of chunk_kernel.cuh for
// Dk = Dv = 128 and 16-bit inputs, with every product on wgmma (KERNEL_NOTES.md, v6).
//
// One block = one (sequence, head, segment), two warpgroups; warpgroup wg owns the v
// columns [64 wg, 64 wg + 64): its slice of the fp32 state R[128, 64] lives in its
// registers (two m64 accumulator tiles), and per 64-token chunk it runs
//   S  = Q K^T                      (both warpgroups: cheaper than sharing it)
//   O  = diag(qd) Q R + mask(S) V   (mask in registers; S becomes the register A operand)
//   R  = lambda^c R + K^T (w V)     (w V: per-token decay weights, written by the warpgroup)
// with B operands (K, V, the 16-bit copy of R) read by the tensor cores straight from
// 128B-swizzled shared memory. All 256 threads stream chunks i+1, i+2 in by cp.async
// (three stages) while chunk i computes.
#pragma once

#include <cstdlib>

#include "chunk_kernel.cuh"
#include "wgmma_utils.cuh"

namespace lightning_attn {
namespace cuda {

struct Sm90Smem {
  static constexpr int kStages = 3;
  static constexpr int kPanel = kChunk * kPanelRowBytes;  // 64 rows x 64 columns: 8 KB
  static constexpr int kTile = 2 * kPanel;                // [64, 128] operand tile
  static constexpr int kStage = 3 * kTile;                // Q, K, V of one chunk
  static constexpr int kVw = kPanel;                      // w V of one warpgroup
  static constexpr int kR = 2 * kPanel;                   // 16-bit R[128, 64] of one warpgroup
  static constexpr int kFixed = kStages * kStage + 2 * kVw + 2 * kR;
  static constexpr size_t bytes = 1024 + kFixed;          // + slack to align the base to 1024
};

// This thread's part of loading a [64, 128] operand tile into two panels: 16-byte chunk
// cc = tid % 16 of rows tid / 16 + 16 i (i < 4). The shared offsets are fixed for the
// whole kernel (row + 16 i keeps the swizzle phase), so a chunk costs one address
// computation and four cp.async per operand; rows past the chunk end are zero-filled
// by cp.async itself (src-size 0), without branches.
struct PanelLoader {
  int soff;  // shared byte offset of row tid / 16 in a tile (+ i * 2048 for row + 16 i)
  int row0;  // tid / 16
  int col;   // element offset of the chunk in a row

  __device__ __forceinline__ PanelLoader() {
    const int cc = threadIdx.x % 16;
    row0 = threadIdx.x / 16;
    col = cc * 8;
    soff = (cc / 8) * (kChunk * kPanelRowBytes) + panel_offset(row0, (cc % 8) * 8);
  }

  // Rows [first, first + clen) of a row-major operand (row stride st elements).
  template <typename TIn>
  __device__ __forceinline__ void load(uint32_t tile, const TIn* base, int64_t st, int64_t first, int clen) const {
    const TIn* src = base + (first + row0) * st + col;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool in = row0 + 16 * i < clen;
      const TIn* s = in ? src + 16 * i * st : base + first * st + col;  // any valid address when zero-filling
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(tile + soff + i * 16 * kPanelRowBytes),
                   "l"(s), "r"(in ? 16 : 0)
                   : "memory");
    }
  }
};

// Stores this warp's two rows of a [64, 64] accumulator tile (rows 16 warp + g, +8; columns
// c0 + 8 j + 2 cq) as 16-bit pairs: o is 4-byte aligned with even strides (host-checked).
template <typename TIn>
__device__ __forceinline__ void store_rows_pairs(const float (&acc)[8][4], TIn* ob, int64_t st, int c0, int warp,
                                                 int lane, int clen, int64_t first) {
  const int g = lane / 4, cq = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = warp * 16 + g + half * 8;
    if (r < clen) {
      uint32_t* orow = reinterpret_cast<uint32_t*>(ob + (first + r) * st + c0 + 2 * cq);
#pragma unroll
      for (int j = 0; j < 8; ++j) orow[j * 4] = pack2<TIn>(acc[j][2 * half], acc[j][2 * half + 1]);
    }
  }
}

template <typename TIn>
__global__ void __launch_bounds__(256, 1) chunk_kernel_sm90(const ChunkParams p) {
#ifdef LIGHTNING_ATTN_SM90A
  using TC = TIn;
  using L = Sm90Smem;
  extern __shared__ __align__(1024) unsigned char smem_sm90[];
  // 1024-byte aligned base (swizzle atoms), by an offset so the compiler keeps shared-space accesses
  unsigned char* smem = smem_sm90 + ((1024 - (smem_addr(smem_sm90) & 1023)) & 1023);

  const int wg = threadIdx.x / 128, warp = (threadIdx.x % 128) / 32, lane = threadIdx.x % 32;
  const int g = lane / 4;
  const int col0 = wg * 64;
  unsigned char* sVw = smem + L::kStages * L::kStage + wg * L::kVw;
  unsigned char* sR = smem + L::kStages * L::kStage + 2 * L::kVw + wg * L::kR;
  auto stage = [&](int buf) { return smem + buf * L::kStage; };

  const int h = blockIdx.x % p.H, n = blockIdx.x / p.H;
  const int seg = blockIdx.y;
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
  TIn* ob = static_cast<TIn*>(p.o) + b * p.o_sb + h * p.o_sh;

  const PanelLoader loader;
  auto load_chunk = [&](int64_t ci, int buf) {
    const int64_t first = start + seg_start + ci * kChunk;
    const int64_t rest = seg_tokens - ci * kChunk;
    const int clen = rest < kChunk ? int(rest) : kChunk;
    const uint32_t tile = smem_addr(stage(buf));
    loader.load(tile, qb, p.q_st, first, clen);
    loader.load(tile + L::kTile, kb, p.k_st, first, clen);
    loader.load(tile + 2 * L::kTile, vb, p.v_st, first, clen);
  };

  // ---- this warpgroup's state slice R[128, 64]: m-tile mt holds rows [64 mt, 64 mt + 64)
  float racc[2][8][4];
  auto slice = [&](int mt) -> float(&)[1][8][4] { return reinterpret_cast<float(&)[1][8][4]>(racc[mt]); };
  const float* init = p.init ? p.init + seg * p.init_sseg + n * p.init_sn + h * p.init_sh : nullptr;
#pragma unroll
  for (int mt = 0; mt < 2; ++mt)
    load_state(slice(mt), init, p.init_sk, p.init_sv, mt * 64 + warp * 16, col0, p.Dk, p.Dv, lane);

  // 16-bit copy of R (MN-major B operand of Q R: row = k index, 64 v columns along the row)
  auto store_state_copy = [&]() {
    const int cq = lane % 4;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const int i = mt * 64 + warp * 16 + g, c = j * 8 + 2 * cq;
        *reinterpret_cast<uint32_t*>(sR + panel_offset(i, c)) = pack2<TC>(racc[mt][j][0], racc[mt][j][1]);
        *reinterpret_cast<uint32_t*>(sR + panel_offset(i + 8, c)) = pack2<TC>(racc[mt][j][2], racc[mt][j][3]);
      }
    fence_proxy_async();
  };
  store_state_copy();

#pragma unroll
  for (int s = 0; s < L::kStages - 1; ++s) {
    if (s < nchunks) load_chunk(s, s);
    cp_async_commit();
  }

  for (int64_t ci = 0; ci < nchunks; ++ci) {
    cp_async_wait<L::kStages - 2>();
    fence_proxy_async();
    __syncthreads();  // chunk ci landed for every thread; everyone is done with chunk ci-1
    if (ci + L::kStages - 1 < nchunks) load_chunk(ci + L::kStages - 1, int((ci + L::kStages - 1) % L::kStages));
    cp_async_commit();

    const int64_t rest = seg_tokens - ci * kChunk;
    const int clen = rest < kChunk ? int(rest) : kChunk;
    unsigned char* sQ = stage(int(ci % L::kStages));
    unsigned char* sK = sQ + L::kTile;
    unsigned char* sV = sQ + 2 * L::kTile;

    // -- S = Q K^T and O = Q R (K-major Q and K; R MN-major), one commit group
    float sacc[8][4], oacc[8][4];
    auto kmajor = [&](const unsigned char* t, int kk) {
      return smem_desc(t + (kk / 4) * L::kPanel + (kk % 4) * 32, 16, 1024);
    };
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 8; ++kk) wgmma_ss<TC, 0, 0>(sacc, kmajor(sQ, kk), kmajor(sK, kk), kk);
#pragma unroll
    for (int kk = 0; kk < 8; ++kk)
      wgmma_ss<TC, 0, 1>(oacc, kmajor(sQ, kk), smem_desc(sR + kk * 16 * kPanelRowBytes, L::kPanel, 1024), kk);
    wgmma_commit();

    // -- w V for this warpgroup's columns while the tensor cores work
    {
      const unsigned char* vsrc = sV + wg * L::kPanel;
#pragma unroll
      for (int i = 0; i < L::kPanel / 16 / 128; ++i) {
        const int idx = (threadIdx.x % 128) + i * 128;
        const int r = idx / 8;
        const float w = r < clen ? p.scale_upd * exp2f(float(clen - 1 - r + p.koff) * l2) : 0.f;
        const uint32_t w2 = pack2<TC>(w, w);
        uint4 x = *reinterpret_cast<const uint4*>(vsrc + idx * 16);
        x.x = mul2<TC>(x.x, w2);
        x.y = mul2<TC>(x.y, w2);
        x.z = mul2<TC>(x.z, w2);
        x.w = mul2<TC>(x.w, w2);
        *reinterpret_cast<uint4*>(sVw + idx * 16) = x;
      }
      fence_proxy_async();
    }

    wgmma_wait<0>();
    fence_regs(sacc);
    fence_regs(oacc);

    // -- decay mask -> A fragments (k-steps past this warp's rows are all zero)
    uint32_t af[4][4];
#pragma unroll
    for (int pp = 0; pp < 4; ++pp)
#pragma unroll
      for (int e = 0; e < 4; ++e) af[pp][e] = 0u;
    decay_mask_to_afrag<TC>(af, reinterpret_cast<const float(&)[4][2][4]>(sacc), warp, lane, p.scale_intra, l2);
    scale_rows<8>(oacc, p.scale_state * exp2f(float(warp * 16 + g + p.qoff) * l2),
                  p.scale_state * exp2f(float(warp * 16 + g + 8 + p.qoff) * l2));
    const float cdecay = exp2f(float(clen) * l2);
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 4; ++e) racc[mt][j][e] *= cdecay;
    named_barrier(1 + wg, 128);  // w V written by the whole warpgroup

    // -- O += mask(S) V; R += K^T (w V)   (V, w V: MN-major; K^T: M-major)
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_rs<TC, 1>(oacc, af[kk], smem_desc(sV + wg * L::kPanel + kk * 16 * kPanelRowBytes, L::kPanel, 1024), 1);
    wgmma_commit();
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_ss<TC, 1, 1>(racc[mt], smem_desc(sK + mt * L::kPanel + kk * 16 * kPanelRowBytes, L::kPanel, 1024),
                           smem_desc(sVw + kk * 16 * kPanelRowBytes, L::kPanel, 1024), 1);
    wgmma_commit();

    wgmma_wait<1>();
    fence_regs(oacc);
    store_rows_pairs<TIn>(oacc, ob, p.o_st, col0, warp, lane, clen, start + seg_start + ci * kChunk);
    wgmma_wait<0>();
    fence_regs(racc[0]);
    fence_regs(racc[1]);
    store_state_copy();
  }
  cp_async_wait_all();

  if (p.out_state != nullptr) {
    float* dst = p.out_state + seg * p.out_sseg + n * p.out_sn + h * p.out_sh;
#pragma unroll
    for (int mt = 0; mt < 2; ++mt)
      save_state(slice(mt), dst, p.out_sk, p.out_sv, mt * 64 + warp * 16, col0, p.Dk, p.Dv, lane);
  }
#endif
}

// Whether this build holds sm_90a code for the kernel and the current device runs it.
// LIGHTNING_ATTN_SM90=0 turns it off (read at every call, for A/B measurements).
template <typename TIn>
bool sm90_kernel_available() {
  const char* env = std::getenv("LIGHTNING_ATTN_SM90");
  if (env != nullptr && env[0] == '0') return false;
  static const bool ok = [] {
    cudaFuncAttributes a{};
    if (cudaFuncGetAttributes(&a, chunk_kernel_sm90<TIn>) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return a.binaryVersion == 90;
  }();
  return ok;
}

// The Hopper kernel serves forward-time, full-output calls with Dk = Dv = 128, 16-byte
// aligned inputs and 4-byte aligned output pairs; everything else (state-only pass 1,
// reversed sweeps, other shapes, float32) stays generic.
template <typename TIn>
bool launch_chunk_sm90(const ChunkParams& p, bool state_only, cudaStream_t stream) {
  if (state_only || p.reverse || p.Dk != 128 || p.Dv != 128 || !p.q_vec || !p.k_vec || !p.v_vec || !p.o_vec2 ||
      !sm90_kernel_available<TIn>())
    return false;
  auto kernel = chunk_kernel_sm90<TIn>;
  const int smem = int(Sm90Smem::bytes);
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const dim3 grid(unsigned(int64_t(p.N) * p.H), unsigned(p.nseg));
  kernel<<<grid, 256, smem, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return true;
}

template <>
bool launch_chunk_fast<128, 128, __nv_bfloat16>(const ChunkParams& p, bool state_only, cudaStream_t stream) {
  return launch_chunk_sm90<__nv_bfloat16>(p, state_only, stream);
}
template <>
bool launch_chunk_fast<128, 128, __half>(const ChunkParams& p, bool state_only, cudaStream_t stream) {
  return launch_chunk_sm90<__half>(p, state_only, stream);
}

}  // namespace cuda
}  // namespace lightning_attn
