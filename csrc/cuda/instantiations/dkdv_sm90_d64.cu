// Hopper fused dk/dv sweep at Dk = Dv = 64: float16 and bfloat16 inputs.
#include "../kernels/dkdv_kernel_sm90.cuh"

namespace lightning_attn {
namespace cuda {

LIGHTNING_ATTN_INSTANTIATE_SM90_DKDV(__half, 64)
LIGHTNING_ATTN_INSTANTIATE_SM90_DKDV(__nv_bfloat16, 64)

}  // namespace cuda
}  // namespace lightning_attn
