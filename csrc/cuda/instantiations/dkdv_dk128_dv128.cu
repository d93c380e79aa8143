// Portable fused dk/dv sweep at padded Dk = 128, Dv = 128: float, float16 and bfloat16 inputs.
#include "../kernels/dkdv_kernel.cuh"

namespace lightning_attn {
namespace cuda {

LIGHTNING_ATTN_INSTANTIATE_DKDV(128, 128, float)
LIGHTNING_ATTN_INSTANTIATE_DKDV(128, 128, __half)
LIGHTNING_ATTN_INSTANTIATE_DKDV(128, 128, __nv_bfloat16)

}  // namespace cuda
}  // namespace lightning_attn
