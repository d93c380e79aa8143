// Hopper chunk kernel at Dk = Dv = 128: float16 and bfloat16 inputs; pass 1 (state only), cp.async,
// TMA and accumulating (o +=) instances.
#include "../kernels/chunk_kernel_sm90.cuh"

namespace lightning_attn {
namespace cuda {

#define LIGHTNING_ATTN_SM90_D128(TIN)                                  \
  LIGHTNING_ATTN_INSTANTIATE_SM90_CHUNK(TIN, 128, true, false, false)  \
  LIGHTNING_ATTN_INSTANTIATE_SM90_CHUNK(TIN, 128, false, false, false) \
  LIGHTNING_ATTN_INSTANTIATE_SM90_CHUNK(TIN, 128, false, false, true)  \
  LIGHTNING_ATTN_INSTANTIATE_SM90_CHUNK(TIN, 128, false, true, false)
LIGHTNING_ATTN_SM90_D128(__half)
LIGHTNING_ATTN_SM90_D128(__nv_bfloat16)

bool hopper_binary() { return sm90_binary(chunk_kernel_sm90<__nv_bfloat16, 128, false>); }

}  // namespace cuda
}  // namespace lightning_attn
