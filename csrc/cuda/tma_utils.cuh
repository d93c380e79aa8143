// Tensor Memory Accelerator (TMA) loads and mbarriers for the Hopper chunk kernel (v8):
// one thread issues a chunk's q, k, v tiles as bulk tensor copies into the 128B-swizzled
// panels the kernel already uses (TMA's SWIZZLE_128B is the same c ^ (r % 8) pattern), and
// the warpgroups wait on an mbarrier instead of a block-wide barrier per chunk.
#pragma once

#include <cstdint>

#include <cuda.h>
#include <cudaTypedefs.h>

#include "wgmma_utils.cuh"

namespace lightning_attn {
namespace cuda {

// The tensor maps of one launch: q, k, v as [D, H, T, B] boxes of 64 columns x 64 rows.
struct TmaMaps {
  CUtensorMap q, k, v;
};

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

// Host: a [B, T, H, 128] 16-bit operand (strides in elements, nested: sh >= 128, st >= H sh,
// sb >= T st, all 16-byte multiples) as a 4-D tensor map of 64 x 64 boxes with the 128-byte
// swizzle. False where the driver refuses it (the caller falls back to cp.async).
inline bool make_tma_map(CUtensorMap* map, const void* base, bool bf16, int64_t B, int64_t T, int64_t H,
                         int64_t sb, int64_t st, int64_t sh) {
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
  const cuuint64_t dims[4] = {128, cuuint64_t(H), cuuint64_t(T), cuuint64_t(B)};
  const cuuint64_t strides[3] = {cuuint64_t(sh) * 2, cuuint64_t(st) * 2, cuuint64_t(sb) * 2};
  const cuuint32_t box[4] = {64, 1, 64, 1};
  const cuuint32_t estr[4] = {1, 1, 1, 1};
  return encode(map, bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4,
                const_cast<void*>(base), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace cuda
}  // namespace lightning_attn
