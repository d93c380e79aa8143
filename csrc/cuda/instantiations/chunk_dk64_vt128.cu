// Portable chunk kernel at padded head dim 64 and v tile 128: float, float16 and bfloat16 inputs.
#include "../kernels/chunk_kernel.cuh"

namespace lightning_attn {
namespace cuda {

LIGHTNING_ATTN_INSTANTIATE_CHUNK(64, 128, float)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(64, 128, __half)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(64, 128, __nv_bfloat16)

}  // namespace cuda
}  // namespace lightning_attn
