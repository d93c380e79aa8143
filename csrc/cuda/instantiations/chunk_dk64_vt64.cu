// Portable chunk kernel at padded head dim 64 and v tile 64: float, float16 and bfloat16 inputs.
#include "../kernels/chunk_kernel.cuh"

namespace lightning_attn {
namespace cuda {

LIGHTNING_ATTN_INSTANTIATE_CHUNK(64, 64, float)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(64, 64, __half)
LIGHTNING_ATTN_INSTANTIATE_CHUNK(64, 64, __nv_bfloat16)

int portable_binary_version() { return binary_version(chunk_kernel<64, 64, float, false>); }

}  // namespace cuda
}  // namespace lightning_attn
