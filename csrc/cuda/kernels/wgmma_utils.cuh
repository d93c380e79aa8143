// Thin wrappers over the sm_90a warpgroup instructions the Hopper chunk kernel uses:
// wgmma.mma_async (m64n64k16, fp32 accumulators), its fences, and shared-memory matrix
// descriptors for the 128-byte-swizzled tiles the kernel keeps in shared memory.
//
// Shared-memory tile convention (one "panel"): rows of 64 16-bit elements (128 bytes),
// 1024-byte aligned, 16-byte chunk c of row r stored at chunk position c ^ (r % 8).
// A [rows, 128] operand is two panels (columns 0-63, 64-127) one after the other.
// The same panel serves as a K-major operand (row = M/N index, K along the row) and as
// an MN-major one (row = K index, M/N along the row).
#pragma once

#include <cstdint>
#include <type_traits>

#include "mma_utils.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LIGHTNING_ATTN_SM90A 1
#endif

namespace lightning_attn {
namespace cuda {

constexpr int kPanelRowBytes = 128;

// Byte offset of element (r, c) (c < 64) inside a panel.
__device__ __forceinline__ int panel_offset(int r, int c) {
  return r * kPanelRowBytes + (((c >> 3) ^ (r & 7)) << 4) + ((c & 7) << 1);
}

// Matrix descriptor of a 128B-swizzled operand starting at `p` (shared memory).
// lbo: byte stride between 64-element groups along M/N (MN-major; unused when the
// operand is one panel wide), sbo: byte stride between 8-row groups (1024 here).
__device__ __forceinline__ uint64_t smem_desc(const void* p, uint32_t lbo, uint32_t sbo) {
  const uint32_t a = smem_addr(p);
  return uint64_t((a & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(1) << 62);
}

// The descriptor of the operand `bytes` (a multiple of 16) further into shared memory: only the
// 14-bit start-address field changes, and it cannot carry out inside shared memory (< 256 KB).
__device__ __forceinline__ uint64_t desc_add(uint64_t d, uint32_t bytes) {
  return (d & 0xFFFFFFFF00000000ull) | uint32_t(uint32_t(d) + (bytes >> 4));
}

__device__ __forceinline__ void wgmma_fence() {
#ifdef LIGHTNING_ATTN_SM90A
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef LIGHTNING_ATTN_SM90A
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifdef LIGHTNING_ATTN_SM90A
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Generic-proxy writes to shared memory (st.shared, cp.async) -> visible to wgmma.
__device__ __forceinline__ void fence_proxy_async() {
#ifdef LIGHTNING_ATTN_SM90A
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Keeps the compiler from moving accumulator reads/writes across wgmma issue/wait.
__device__ __forceinline__ void fence_regs(float (&d)[8][4]) {
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+f"(d[i][e])::"memory");
}

// Named barrier over `count` threads (a warpgroup: 128).
__device__ __forceinline__ void named_barrier(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}

#define LA_WGMMA_D32(d)                                                                              \
  "+f"(d[0][0]), "+f"(d[0][1]), "+f"(d[0][2]), "+f"(d[0][3]), "+f"(d[1][0]), "+f"(d[1][1]),          \
      "+f"(d[1][2]), "+f"(d[1][3]), "+f"(d[2][0]), "+f"(d[2][1]), "+f"(d[2][2]), "+f"(d[2][3]),      \
      "+f"(d[3][0]), "+f"(d[3][1]), "+f"(d[3][2]), "+f"(d[3][3]), "+f"(d[4][0]), "+f"(d[4][1]),      \
      "+f"(d[4][2]), "+f"(d[4][3]), "+f"(d[5][0]), "+f"(d[5][1]), "+f"(d[5][2]), "+f"(d[5][3]),      \
      "+f"(d[6][0]), "+f"(d[6][1]), "+f"(d[6][2]), "+f"(d[6][3]), "+f"(d[7][0]), "+f"(d[7][1]),      \
      "+f"(d[7][2]), "+f"(d[7][3])
#define LA_WGMMA_DREGS                                                                               \
  "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25," \
  "%26,%27,%28,%29,%30,%31}"

// d[64 x 64] (+)= A[64 x 16] B[16 x 64], both operands in shared memory. TA / TB: 0 =
// K-major, 1 = MN-major (transposed). accumulate = 0 overwrites d.
template <typename TC, int TA, int TB>
__device__ __forceinline__ void wgmma_ss(float (&d)[8][4], uint64_t da, uint64_t db, int accumulate) {
#ifdef LIGHTNING_ATTN_SM90A
  if constexpr (std::is_same<TC, __half>::value) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " LA_WGMMA_DREGS
        ", %32, %33, p, 1, 1, %35, %36;\n}\n"
        : LA_WGMMA_D32(d)
        : "l"(da), "l"(db), "r"(accumulate), "n"(TA), "n"(TB));
  } else {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " LA_WGMMA_DREGS
        ", %32, %33, p, 1, 1, %35, %36;\n}\n"
        : LA_WGMMA_D32(d)
        : "l"(da), "l"(db), "r"(accumulate), "n"(TA), "n"(TB));
  }
#endif
}

// d[64 x 64] += A[64 x 16] B[16 x 64], A from registers (the m16n8k16 A fragment of each
// warp's 16 rows), B in shared memory (TB as above).
template <typename TC, int TB>
__device__ __forceinline__ void wgmma_rs(float (&d)[8][4], const uint32_t (&a)[4], uint64_t db, int accumulate) {
#ifdef LIGHTNING_ATTN_SM90A
  if constexpr (std::is_same<TC, __half>::value) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " LA_WGMMA_DREGS
        ", {%32,%33,%34,%35}, %36, p, 1, 1, %38;\n}\n"
        : LA_WGMMA_D32(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate), "n"(TB));
  } else {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " LA_WGMMA_DREGS
        ", {%32,%33,%34,%35}, %36, p, 1, 1, %38;\n}\n"
        : LA_WGMMA_D32(d)
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(accumulate), "n"(TB));
  }
#endif
}

#undef LA_WGMMA_D32
#undef LA_WGMMA_DREGS

}  // namespace cuda
}  // namespace lightning_attn
