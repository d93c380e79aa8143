// Chunk kernel instantiations for padded head dim 128 and v tile 128 (one file per
// shape keeps the parallel build short): float, float16 and bfloat16 inputs; the 16-bit
// ones go to the Hopper kernel where it applies.
#include "chunk_kernel_sm90.cuh"

namespace lightning_attn {
namespace cuda {

LIGHTNING_ATTN_SM90_CHUNK(128, __nv_bfloat16)
LIGHTNING_ATTN_SM90_CHUNK(128, __half)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(128, 128, float)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(128, 128, __half)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(128, 128, __nv_bfloat16)

}  // namespace cuda
}  // namespace lightning_attn
