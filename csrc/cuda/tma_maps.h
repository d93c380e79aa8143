// Host side of the Hopper kernels' bulk tensor copies: the tensor maps a launch passes
// (as __grid_constant__ kernel arguments) and their encoding through the driver entry point.
#pragma once

#include <cstdint>

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

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
