// The launchers of every compiled kernel, by family and shape. Each is defined in one
// file of instantiations/ (explicit instantiations of the templates in kernels/), so the
// host code sees declarations only and the kernels compile in parallel.
#pragma once

#include <type_traits>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "params.h"
#include "tma_maps.h"
#include "torch_cuda_headers.h"

namespace lightning_attn {
namespace cuda {

// The kernels of the chunk family (dispatch.h chooses one per call).
enum class ChunkVariant {
  kPortable,   // kernels/chunk_kernel.cuh: mma.sync and cp.async, sm_80 and later, every shape and dtype
  kHopper,     // kernels/chunk_kernel_sm90.cuh: wgmma, cp.async loads, row stores
  kHopperTma,  // the same with TMA loads (and TMA stores of o where ChunkParams::tma_store)
  kHopperAcc,  // the same adding into o (o_accumulate: the 128-wide pieces of Dk = 256)
};
// The fused dk/dv sweep's kernels.
enum class DkDvVariant {
  kPortable,        // kernels/dkdv_kernel.cuh
  kHopper,          // kernels/dkdv_kernel_sm90.cuh, row stores
  kHopperTmaStore,  // the same with TMA stores of dk and dv
};

template <typename T>
constexpr bool is_16bit = std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value;
// Shapes with a Hopper kernel: padded Dk = v tile = 64 or 128, 16-bit inputs.
template <int DK, int VT, typename TIn>
constexpr bool has_hopper_chunk = DK == VT && (DK == 64 || DK == 128) && is_16bit<TIn>;
template <int DK, int DV, typename TIn>
constexpr bool has_hopper_dkdv = has_hopper_chunk<DK, DV, TIn>;

// instantiations/chunk_dk*_vt*.cu: the portable chunk kernel, TIn float, __half or __nv_bfloat16.
template <int DK, int VT, typename TIn, bool STATE_ONLY>
void launch_chunk_portable(const ChunkParams& p, cudaStream_t stream);
template <int DK, int VT, typename TIn, bool STATE_ONLY>
int chunk_portable_blocks_per_sm();

// instantiations/chunk_sm90_d*.cu: the Hopper chunk kernel at D = Dk = Dv, 16-bit TIn. Instances:
// <STATE_ONLY, ACC, TMA> = <1, 0, 0> (pass 1), <0, 0, 0>, <0, 0, 1>, and <0, 1, 0> at D = 128.
template <typename TIn, int D, bool STATE_ONLY, bool ACC, bool TMA>
void launch_chunk_sm90(const ChunkParams& p, const TmaMaps& maps, cudaStream_t stream);
template <typename TIn, int D, bool STATE_ONLY, bool ACC, bool TMA>
int chunk_sm90_blocks_per_sm();

// instantiations/dkdv_dk*_dv*.cu and dkdv_sm90_d*.cu: the fused dk/dv sweep.
template <int DK, int DV, typename TIn>
void launch_dkdv_portable(const DkDvParams& p, cudaStream_t stream);
template <int DK, int DV, typename TIn>
int dkdv_portable_blocks_per_sm();
template <typename TIn, int D, bool TMA_STORE>
void launch_dkdv_sm90(const DkDvParams& p, const DkDvMaps& maps, cudaStream_t stream);
template <typename TIn, int D>
int dkdv_sm90_blocks_per_sm();

// The architecture (cudaFuncAttributes::binaryVersion, e.g. 80 or 90) of the code the current
// device loads for the portable kernels, 0 where this build has none it can run; and whether it
// runs this build's sm_90a code of the Hopper kernels (sm90_binary).
int portable_binary_version();
bool hopper_binary();

// kernels/state_kernels.cu
void launch_scan(const ScanParams& p, cudaStream_t stream);
// The checkpoints of forward problem p past each sequence's end: its final state.
void launch_checkpoint_tail(const ChunkParams& p, const StateRef& final_state, cudaStream_t stream);
template <typename TIn>
void launch_decode(const DecodeParams& p, cudaStream_t stream);

// Runs the chunk kernel `variant` (a variant this shape has: dispatch.h chose it).
template <int DK, int VT, typename TIn>
void launch_chunk(ChunkVariant variant, bool state_only, const ChunkParams& p, const TmaMaps& maps,
                  cudaStream_t stream) {
  if constexpr (has_hopper_chunk<DK, VT, TIn>) {
    constexpr int D = DK;
    switch (variant) {
      case ChunkVariant::kHopper:
        return state_only ? launch_chunk_sm90<TIn, D, true, false, false>(p, maps, stream)
                          : launch_chunk_sm90<TIn, D, false, false, false>(p, maps, stream);
      case ChunkVariant::kHopperTma: return launch_chunk_sm90<TIn, D, false, false, true>(p, maps, stream);
      case ChunkVariant::kHopperAcc:
        if constexpr (D == 128) return launch_chunk_sm90<TIn, D, false, true, false>(p, maps, stream);
        break;
      case ChunkVariant::kPortable: break;
    }
  }
  TORCH_CHECK(variant == ChunkVariant::kPortable && !p.o_accumulate,
              "lightning_attn: internal error: no such chunk kernel for this shape");
  state_only ? launch_chunk_portable<DK, VT, TIn, true>(p, stream) : launch_chunk_portable<DK, VT, TIn, false>(p, stream);
}

template <int DK, int VT, typename TIn>
int chunk_blocks_per_sm(ChunkVariant variant, bool state_only) {
  if constexpr (has_hopper_chunk<DK, VT, TIn>) {
    constexpr int D = DK;
    switch (variant) {
      case ChunkVariant::kHopper:
        return state_only ? chunk_sm90_blocks_per_sm<TIn, D, true, false, false>()
                          : chunk_sm90_blocks_per_sm<TIn, D, false, false, false>();
      case ChunkVariant::kHopperTma: return chunk_sm90_blocks_per_sm<TIn, D, false, false, true>();
      case ChunkVariant::kHopperAcc:
        if constexpr (D == 128) return chunk_sm90_blocks_per_sm<TIn, D, false, true, false>();
        break;
      case ChunkVariant::kPortable: break;
    }
  }
  return state_only ? chunk_portable_blocks_per_sm<DK, VT, TIn, true>()
                    : chunk_portable_blocks_per_sm<DK, VT, TIn, false>();
}

template <int DK, int DV, typename TIn>
void launch_dkdv(DkDvVariant variant, const DkDvParams& p, const DkDvMaps& maps, cudaStream_t stream) {
  if constexpr (has_hopper_dkdv<DK, DV, TIn>) {
    if (variant == DkDvVariant::kHopper) return launch_dkdv_sm90<TIn, DK, false>(p, maps, stream);
    if (variant == DkDvVariant::kHopperTmaStore) return launch_dkdv_sm90<TIn, DK, true>(p, maps, stream);
  }
  TORCH_CHECK(variant == DkDvVariant::kPortable && !p.dv_accumulate,
              "lightning_attn: internal error: no such dk/dv kernel for this shape");
  launch_dkdv_portable<DK, DV, TIn>(p, stream);
}

template <int DK, int DV, typename TIn>
int dkdv_blocks_per_sm(DkDvVariant variant) {
  if constexpr (has_hopper_dkdv<DK, DV, TIn>) {
    if (variant != DkDvVariant::kPortable) return dkdv_sm90_blocks_per_sm<TIn, DK>();
  }
  return dkdv_portable_blocks_per_sm<DK, DV, TIn>();
}

}  // namespace cuda
}  // namespace lightning_attn
