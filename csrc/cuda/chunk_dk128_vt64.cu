// Chunk kernel instantiations for padded head dim 128 and v tile 64 (one file per
// shape keeps the parallel build short): float, float16 and bfloat16 inputs.
#include "chunk_kernel.cuh"

namespace lightning_attn {
namespace cuda {

LIGHTNING_ATTN_INSTANTIATE_CHUNK(128, 64, float)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(128, 64, __half)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(128, 64, __nv_bfloat16)

}  // namespace cuda
}  // namespace lightning_attn
