// Chunk kernel instantiations for padded head dim 64 and v tile 64 (one file per
// shape keeps the parallel build short): float, float16 and bfloat16 inputs; the 16-bit
// ones with Dk = Dv = 64 go to the Hopper kernel where it applies (v12).
#include "chunk_kernel_sm90.cuh"

namespace lightning_attn {
namespace cuda {

LIGHTNING_ATTN_SM90_CHUNK(64, __nv_bfloat16)
LIGHTNING_ATTN_SM90_CHUNK(64, __half)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(64, 64, float)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(64, 64, __half)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(64, 64, __nv_bfloat16)

}  // namespace cuda
}  // namespace lightning_attn
