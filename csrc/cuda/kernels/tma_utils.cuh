// Tensor Memory Accelerator (TMA) loads, stores and mbarriers for the Hopper kernels:
// one thread issues a chunk's q, k, v tiles as bulk tensor copies into the 128B-swizzled
// panels the kernel already uses (TMA's SWIZZLE_128B is the same c ^ (r % 8) pattern), and
// the warpgroups wait on an mbarrier instead of a block-wide barrier per chunk; output rows
// go the other way, staged by stmatrix and written by one bulk store per warp.
#pragma once

#include <cstdint>

#include "../tma_maps.h"
#include "wgmma_utils.cuh"

namespace lightning_attn {
namespace cuda {

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

}  // namespace cuda
}  // namespace lightning_attn
