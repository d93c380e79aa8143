// Instantiations of the fused dk/dv backward sweep: padded (Dk, Dv) in {64, 128}^2,
// float, float16 and bfloat16 inputs; the 16-bit ones at (64, 64) and (128, 128) go to the
// Hopper kernel where it applies.
#include "bwd_dkdv_kernel_sm90.cuh"

namespace lightning_attn {
namespace cuda {

#define LIGHTNING_ATTN_DKDV_TYPES(DK, DV)                 \
  LIGHTNING_ATTN_INSTANTIATE_DKDV(DK, DV, float)          \
  LIGHTNING_ATTN_INSTANTIATE_DKDV(DK, DV, __half)         \
  LIGHTNING_ATTN_INSTANTIATE_DKDV(DK, DV, __nv_bfloat16)

LIGHTNING_ATTN_DKDV_TYPES(64, 64)
LIGHTNING_ATTN_DKDV_TYPES(64, 128)
LIGHTNING_ATTN_DKDV_TYPES(128, 64)
LIGHTNING_ATTN_DKDV_TYPES(128, 128)

}  // namespace cuda
}  // namespace lightning_attn
