// Portable chunk kernel at padded head dim 256 and v tile 64: float, float16 and bfloat16 inputs.
#include "../kernels/chunk_kernel.cuh"

namespace lightning_attn {
namespace cuda {

LIGHTNING_ATTN_INSTANTIATE_CHUNK(256, 64, float)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(256, 64, __half)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(256, 64, __nv_bfloat16)

}  // namespace cuda
}  // namespace lightning_attn
