// Hopper chunk kernel at Dk = Dv = 64: float16 and bfloat16 inputs; pass 1 (state only), cp.async
// and TMA instances (no accumulating instance: only the 128-wide pieces of Dk = 256 add into o).
#include "../kernels/chunk_kernel_sm90.cuh"

namespace lightning_attn {
namespace cuda {

#define LIGHTNING_ATTN_SM90_D64(TIN)                                \
  LIGHTNING_ATTN_INSTANTIATE_SM90_CHUNK(TIN, 64, true, false, false)  \
  LIGHTNING_ATTN_INSTANTIATE_SM90_CHUNK(TIN, 64, false, false, false) \
  LIGHTNING_ATTN_INSTANTIATE_SM90_CHUNK(TIN, 64, false, false, true)
LIGHTNING_ATTN_SM90_D64(__half)
LIGHTNING_ATTN_SM90_D64(__nv_bfloat16)

}  // namespace cuda
}  // namespace lightning_attn
