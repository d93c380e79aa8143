// Tensor Memory Accelerator (TMA) loads, stores and mbarriers for the Hopper kernels (v8-v11):
// one thread issues a chunk's q, k, v tiles as bulk tensor copies into the 128B-swizzled
// panels the kernel already uses (TMA's SWIZZLE_128B is the same c ^ (r % 8) pattern), and
// the warpgroups wait on an mbarrier instead of a block-wide barrier per chunk; output rows
// go the other way, staged by stmatrix and written by one bulk store per warp.
#pragma once

#include <cstdint>

#include <cuda.h>
#include <cudaTypedefs.h>

#include "chunk_params.h"
#include "wgmma_utils.cuh"

namespace lightning_attn {
namespace cuda {

// The tensor maps of one launch: q, k, v (and o, stored through shared memory) as
// [D, H, T, B] tensors in boxes of 64 columns x 64 rows (o: 16 rows).
struct TmaMaps {
  CUtensorMap q, k, v, o;
};
// The dk/dv sweep's outputs (16-row boxes, one per warp), stored in reversed time.
struct DkDvMaps {
  CUtensorMap dk, dv;
};

// LIGHTNING_ATTN_TMA=0 keeps cp.async loads and 4-byte row stores in the Hopper kernels;
// LIGHTNING_ATTN_TMA_STORE=0 keeps only the row stores (v8). A/B switches.
inline bool tma_enabled() { return !env_is("LIGHTNING_ATTN_TMA", '0'); }
inline bool tma_store_enabled() { return tma_enabled() && !env_is("LIGHTNING_ATTN_TMA_STORE", '0'); }

__device__ __forceinline__ void mbar_init(uint64_t* bar, int count) {
#ifdef LIGHTNING_ATTN_SM90A
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(count) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
#ifdef LIGHTNING_ATTN_SM90A
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(smem_addr(bar)) : "memory");
#endif
}
// The producer's arrival: the phase completes when `bytes` more have landed.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
#ifdef LIGHTNING_ATTN_SM90A
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(smem_addr(bar)), "r"(bytes)
               : "memory");
#endif
}
// Waits until the phase with this parity has completed.
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
#ifdef LIGHTNING_ATTN_SM90A
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(smem_addr(bar)),
      "r"(parity)
      : "memory");
#endif
}

// One [64 rows, 64 columns] box at (column c, head h, row t, batch b) into a panel; rows past
// the tensor's T are zero-filled.
__device__ __forceinline__ void tma_load_panel(void* dst, const CUtensorMap* map, uint64_t* bar, int c, int h,
                                               int t, int b) {
#ifdef LIGHTNING_ATTN_SM90A
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6}], "
      "[%2];\n" ::"r"(smem_addr(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(smem_addr(bar)), "r"(c), "r"(h), "r"(t), "r"(b)
      : "memory");
#endif
}

// Rows of a panel to the box at (c, h, t, b) of global memory (rows past T are dropped), as a
// bulk async group of the issuing thread; add: added into global memory element-wise (in L2)
// instead of stored over it.
#define LIGHTNING_ATTN_TMA_STORE_ASM(OP)                                                  \
  asm volatile(OP " [%0, {%2, %3, %4, %5}], [%1];\n"                                    \
                  "cp.async.bulk.commit_group;\n" ::"l"(reinterpret_cast<uint64_t>(map)), \
               "r"(smem_addr(src)), "r"(c), "r"(h), "r"(t), "r"(b)                        \
               : "memory")
__device__ __forceinline__ void tma_store_panel(const CUtensorMap* map, const void* src, int c, int h, int t, int b,
                                                bool add = false) {
#ifdef LIGHTNING_ATTN_SM90A
  if (add)
    LIGHTNING_ATTN_TMA_STORE_ASM("cp.reduce.async.bulk.tensor.4d.global.shared::cta.add.tile.bulk_group");
  else
    LIGHTNING_ATTN_TMA_STORE_ASM("cp.async.bulk.tensor.4d.global.shared::cta.bulk_group");
#endif
}
#undef LIGHTNING_ATTN_TMA_STORE_ASM
// Waits until this thread's bulk stores have read their shared memory (READ_ONLY) or completed.
template <bool READ_ONLY>
__device__ __forceinline__ void tma_store_wait() {
#ifdef LIGHTNING_ATTN_SM90A
  if constexpr (READ_ONLY)
    asm volatile("cp.async.bulk.wait_group.read 0;\n" ::: "memory");
  else
    asm volatile("cp.async.bulk.wait_group 0;\n" ::: "memory");
#endif
}

// Host: a [B, T, H, D] 16-bit operand (D = 64 or 128; strides in elements, nested: sh >= D,
// st >= H sh, sb >= T st, all 16-byte multiples) as a 4-D tensor map of boxes of 64 columns x
// box_rows rows with the 128-byte swizzle. False where the strides do not nest or the driver
// refuses it (the caller falls back to cp.async or row stores).
inline bool make_tma_map(CUtensorMap* map, const void* base, bool bf16, int64_t B, int64_t T, int64_t H,
                         int64_t sb, int64_t st, int64_t sh, int box_rows = 64, int D = 128) {
  if (B == 1) sb = T * st;  // one batch row: its stride is never used
  if (sh < D || st < H * sh || sb < T * st || T > INT32_MAX) return false;  // coordinates are int32
  static PFN_cuTensorMapEncodeTiled_v12000 encode = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult q{};
#if CUDART_VERSION >= 12050
    const cudaError_t e = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, &q);
#else
    const cudaError_t e = cudaGetDriverEntryPoint("cuTensorMapEncodeTiled", &fn, cudaEnableDefault, &q);
#endif
    if (e != cudaSuccess || q != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      fn = nullptr;
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  if (encode == nullptr) return false;
  const cuuint64_t dims[4] = {cuuint64_t(D), cuuint64_t(H), cuuint64_t(T), cuuint64_t(B)};
  const cuuint64_t strides[3] = {cuuint64_t(sh) * 2, cuuint64_t(st) * 2, cuuint64_t(sb) * 2};
  const cuuint32_t box[4] = {64, 1, cuuint32_t(box_rows), 1};
  const cuuint32_t estr[4] = {1, 1, 1, 1};
  return encode(map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
                const_cast<void*>(base), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace cuda
}  // namespace lightning_attn
