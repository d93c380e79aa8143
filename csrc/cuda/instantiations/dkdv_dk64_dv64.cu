// Portable fused dk/dv sweep at padded Dk = 64, Dv = 64: float, float16 and bfloat16 inputs.
#include "../kernels/dkdv_kernel.cuh"

namespace lightning_attn {
namespace cuda {

LIGHTNING_ATTN_INSTANTIATE_DKDV(64, 64, float)
LIGHTNING_ATTN_INSTANTIATE_DKDV(64, 64, __half)
LIGHTNING_ATTN_INSTANTIATE_DKDV(64, 64, __nv_bfloat16)

}  // namespace cuda
}  // namespace lightning_attn
