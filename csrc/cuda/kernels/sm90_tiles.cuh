// Pieces shared by the Hopper (sm_90a) kernels (chunk_kernel_sm90.cuh, dkdv_kernel_sm90.cuh):
// chunk loads into 128B-swizzled panels, descriptors of panel operands, row stores from
// wgmma accumulators, the per-token weighted copy of a panel, the 16-bit state copy.
// Two warpgroups per block; a thread's accumulator tile [64, 64] follows the wgmma layout
// (warp w of its warpgroup: rows 16 w + g, +8; lane = 4 g + cq: columns 8 j + 2 cq, +1).
#pragma once

#include "../params.h"
#include "kernel_common.cuh"
#include "mma_utils.cuh"
#include "warp_tiles.cuh"
#include "wgmma_utils.cuh"

namespace lightning_attn {
namespace cuda {

constexpr int kPanelBytes = kChunk * kPanelRowBytes;  // one [64, 64] panel: 8 KB

// Descriptor of k-step kk (16 columns) of a K-major [rows, 128] operand (two panels of `rows`
// rows; 64 rows unless given): 32 bytes per k-step inside a panel. The k-steps share one base
// descriptor plus a constant (a full descriptor per k-step costs ~8 instructions per wgmma).
__device__ __forceinline__ uint64_t kmajor_desc(const unsigned char* t, int kk, int rows = kChunk) {
  return desc_add(smem_desc(t, 16, 1024), (kk / 4) * rows * kPanelRowBytes + (kk % 4) * 32);
}
// Descriptor of k-step kk (16 rows) of an MN-major panel (row = k index, 64 M/N columns).
__device__ __forceinline__ uint64_t mnmajor_desc(const unsigned char* t, int kk) {
  return desc_add(smem_desc(t, kPanelBytes, 1024), kk * 16 * kPanelRowBytes);
}

// This thread's part of loading a [64, 64 KP] operand tile into KP panels by the block's
// 128 KP threads: 16-byte chunk cc = tid % (8 KP) of rows tid / (8 KP) + 16 i (i < 4). The
// shared offsets are fixed for the whole kernel (row + 16 i keeps the swizzle phase), so a
// chunk costs one address computation and four cp.async per operand; rows past the chunk
// end are zero-filled by cp.async itself (src-size 0), without branches.
template <int KP>
struct PanelLoader {
  int soff;  // shared byte offset of row tid / (8 KP) in a tile (+ i * 2048 for row + 16 i)
  int row0;  // tid / (8 KP)
  int col;   // element offset of the chunk in a row

  __device__ __forceinline__ PanelLoader() : PanelLoader(int(threadIdx.x)) {}
  // tid < 128 KP: the loading thread's index among the tile's loaders
  __device__ __forceinline__ explicit PanelLoader(int tid) {
    const int cc = tid % (8 * KP);
    row0 = tid / (8 * KP);
    col = cc * 8;
    soff = (cc / 8) * kPanelBytes + panel_offset(row0, (cc % 8) * 8);
  }

  // Rows first, first + dir, ... (clen of them; dir = -1 for reversed time) of a row-major
  // operand with row stride st elements, as tile rows 0, 1, ...
  template <typename TIn>
  __device__ __forceinline__ void load(uint32_t tile, const TIn* base, int64_t st, int64_t first, int dir,
                                       int clen) const {
    const int64_t dst = dir * st;
    const TIn* src = base + first * st + row0 * dst + col;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const bool in = row0 + 16 * i < clen;
      const TIn* s = in ? src + 16 * i * dst : base + first * st + col;  // any valid address when zero-filling
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(tile + soff + i * 16 * kPanelRowBytes),
                   "l"(s), "r"(in ? 16 : 0)
                   : "memory");
    }
  }
};

// Stores this warp's two rows of a [64, 64] accumulator tile (tile rows 16 warp + g, +8 ->
// output rows first + dir * row; columns c0 + 8 j + 2 cq) as 16-bit pairs: the output is
// 4-byte aligned with even strides (host-checked). add: out = 16-bit(out + 16-bit(acc)), the
// rounding of a separate add and of the TMA reduce-add.
template <typename TIn>
__device__ __forceinline__ void store_rows_pairs(const float (&acc)[8][4], TIn* ob, int64_t st, int c0, int warp,
                                                 int lane, int clen, int64_t first, int dir, bool add = false) {
  const int g = lane / 4, cq = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int r = warp * 16 + g + half * 8;
    if (r < clen) {
      uint32_t* orow = reinterpret_cast<uint32_t*>(ob + (first + dir * r) * st + c0 + 2 * cq);
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        uint32_t x = pack2<TIn>(acc[j][2 * half], acc[j][2 * half + 1]);
        if (add) {
          const float2 a = unpack2<TIn>(x), o = unpack2<TIn>(orow[j * 4]);
          x = pack2<TIn>(o.x + a.x, o.y + a.y);
        }
        orow[j * 4] = x;
      }
    }
  }
}

// acc += the same rows and columns of a 16-bit panel (the ACC kernel's old o rows, zero past
// the chunk's end), in the wgmma accumulator layout of this warp's 16 rows.
template <typename TIn>
__device__ __forceinline__ void add_panel_rows(float (&acc)[8][4], const unsigned char* panel, int warp, int lane) {
  const int g = lane / 4, cq = lane % 4;
#pragma unroll
  for (int half = 0; half < 2; ++half)
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float2 x =
          unpack2<TIn>(*reinterpret_cast<const uint32_t*>(panel + panel_offset(warp * 16 + g + half * 8, j * 8 + 2 * cq)));
      acc[j][2 * half] += x.x, acc[j][2 * half + 1] += x.y;
    }
}

// dst = diag(w) src for one [64, 64] panel, by a warpgroup (same swizzle, so the byte
// offset carries over): w_r = scale lambda^(clen - 1 - r + off) for rows r < clen, else 0.
template <typename TC>
__device__ __forceinline__ void weight_panel_rows(unsigned char* dst, const unsigned char* src, int clen, float scale,
                                                  int off, float l2) {
#pragma unroll
  for (int i = 0; i < kPanelBytes / 16 / 128; ++i) {
    const int idx = (threadIdx.x % 128) + i * 128;
    const int r = idx / 8;
    const float w = r < clen ? scale * exp2f(float(clen - 1 - r + off) * l2) : 0.f;
    const uint32_t w2 = pack2<TC>(w, w);
    uint4 x = *reinterpret_cast<const uint4*>(src + idx * 16);
    x.x = mul2<TC>(x.x, w2);
    x.y = mul2<TC>(x.y, w2);
    x.z = mul2<TC>(x.z, w2);
    x.w = mul2<TC>(x.w, w2);
    *reinterpret_cast<uint4*>(dst + idx * 16) = x;
  }
  fence_proxy_async();
}

// A warp's 16 rows x 64 columns of fp32 accumulators (wgmma layout) -> 16-bit rows of a
// 128B-swizzled panel, by four stmatrix.x4: matrix i of step p holds rows 8 (i % 2).. and
// columns 8 (2 p + i / 2).., lane l giving the address of row l % 8 of matrix l / 8. FLIP
// writes the warp's 16 rows in reverse order (reversed time: row 15 of the box is row 0 of the tile).
template <typename TC, bool FLIP>
__device__ __forceinline__ void stage_rows_stmatrix(unsigned char* panel, const float (&acc)[8][4], int warp,
                                                    int lane) {
#ifdef LIGHTNING_ATTN_SM90A
  const int local = (lane / 8 % 2) * 8 + lane % 8, mi = lane / 8;
  const int row = warp * 16 + (FLIP ? 15 - local : local);
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    const uint32_t addr = smem_addr(panel + panel_offset(row, (2 * p + mi / 2) * 8));
    asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr),
                 "r"(pack2<TC>(acc[2 * p][0], acc[2 * p][1])), "r"(pack2<TC>(acc[2 * p][2], acc[2 * p][3])),
                 "r"(pack2<TC>(acc[2 * p + 1][0], acc[2 * p + 1][1])),
                 "r"(pack2<TC>(acc[2 * p + 1][2], acc[2 * p + 1][3]))
                 : "memory");
  }
#endif
}

// A warpgroup's fp32 state slice S[64 KP, 64] (m-tile mt: rows 64 mt..) -> its 16-bit copy, one
// tall panel [64 KP, 64] (row = state row): the MN-major B operand of X S, the K-major one of X S^T.
template <typename TC, int KP>
__device__ __forceinline__ void store_state_panel(unsigned char* panel, const float (&racc)[KP][8][4], int warp,
                                                  int lane) {
  // rows 64 mt.. of the tall panel are a panel of their own (the swizzle phase is row % 8); by
  // stmatrix, 4 instead of 16 shared stores per m-tile
#pragma unroll
  for (int mt = 0; mt < KP; ++mt) stage_rows_stmatrix<TC, false>(panel + mt * kPanelBytes, racc[mt], warp, lane);
  fence_proxy_async();
}

// Multiplies every entry of a warpgroup's state slice by f.
template <int KP>
__device__ __forceinline__ void scale_state(float (&racc)[KP][8][4], float f) {
#pragma unroll
  for (int mt = 0; mt < KP; ++mt)
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) racc[mt][j][e] *= f;
}

// Raw scores of a [64, 64] accumulator tile -> register A fragments of its masked, decayed
// form (decay_mask_to_afrag of warp_tiles.cuh, this warp's 16 rows); k-steps past the warp's
// rows, which wgmma still issues for the whole warpgroup, are zero.
template <typename TC>
__device__ __forceinline__ void masked_afrag(uint32_t (&af)[4][4], const float (&sacc)[8][4], int warp, int lane,
                                             float scale, float l2) {
#pragma unroll
  for (int pp = 0; pp < 4; ++pp)
#pragma unroll
    for (int e = 0; e < 4; ++e) af[pp][e] = 0u;
  decay_mask_to_afrag<TC>(af, reinterpret_cast<const float(&)[4][2][4]>(sacc), warp, lane, scale, l2);
}

// Issues S += X^T W for a warpgroup's state slice (m-tile mt: rows 64 mt..): X a [64, 64 KP]
// tile read as M-major A (its panel mt), W the warpgroup's weighted [64, 64] panel (MN-major B).
template <typename TC, int KP>
__device__ __forceinline__ void issue_state_update(float (&racc)[KP][8][4], const unsigned char* x,
                                                   const unsigned char* w) {
#pragma unroll
  for (int mt = 0; mt < KP; ++mt)
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_ss<TC, 1, 1>(racc[mt], mnmajor_desc(x + mt * kPanelBytes, kk), mnmajor_desc(w, kk), 1);
}

// Whether the current device runs this build's sm_90a code of `kernel`: code compiled from
// compute_90a PTX (binary and PTX version 90). An older target's PTX, which the driver compiles
// for an sm_90 GPU where the build has no sm_90a code, also reports binary version 90 but holds
// the empty body (the Hopper code exists only under LIGHTNING_ATTN_SM90A).
template <typename Kernel>
bool sm90_binary(Kernel kernel) {
  const cudaFuncAttributes a = loaded_attributes(kernel);
  return a.binaryVersion == 90 && a.ptxVersion == 90;
}

}  // namespace cuda
}  // namespace lightning_attn
