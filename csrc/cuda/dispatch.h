// Which kernel runs: one choice per problem, made once per call from the params, the
// device and the kernel options, returning the variant, the tensor maps it takes and the
// occupancy the split planner sizes its waves by. Also the dtype and head-dim switches.
#pragma once

#include <mutex>
#include <vector>

#include "context.h"
#include "launch.h"
#include "tma_maps.h"

namespace lightning_attn {
namespace cuda {

// Calls __VA_ARGS__ (a lambda body) with `using scalar_t` bound to the CUDA type of DTYPE.
#define LIGHTNING_ATTN_DTYPE_SWITCH(DTYPE, ...)                                             \
  [&] {                                                                                     \
    switch (DTYPE) {                                                                        \
      case at::kFloat: { using scalar_t = float; return __VA_ARGS__(); }                   \
      case at::kHalf: { using scalar_t = __half; return __VA_ARGS__(); }                   \
      case at::kBFloat16: { using scalar_t = __nv_bfloat16; return __VA_ARGS__(); }        \
      default: TORCH_CHECK(false, "lightning_attn: unsupported dtype on CUDA: ", DTYPE);    \
    }                                                                                       \
  }()

// Inside the shape switches: binds NAME to 64 where DV <= 64, else to 128, and calls the body.
#define LIGHTNING_ATTN_BIND_64_OR_128_(NAME, DV, ...)         \
  if ((DV) <= 64) { constexpr int NAME = 64; return __VA_ARGS__(); } \
  constexpr int NAME = 128;                                   \
  return __VA_ARGS__()

// Binds kDK (padded Dk: 64, 128 or 256) and kVT (the v tile a chunk block owns) for the chunk
// kernels. VT is 128 where Dv > 64 (all of Dv = 128 in one block, so q and k are read once),
// 64 for Dv <= 64 (no padded half tile) and at Dk = 256 (the fp32 state slice 256 x 64 then
// stays in registers, 64 floats per thread).
#define LIGHTNING_ATTN_CHUNK_SHAPE_SWITCH(DK, DV, ...)                          \
  [&] {                                                                         \
    if ((DK) <= 64) {                                                           \
      constexpr int kDK = 64;                                                   \
      LIGHTNING_ATTN_BIND_64_OR_128_(kVT, DV, __VA_ARGS__);                     \
    } else if ((DK) <= 128) {                                                   \
      constexpr int kDK = 128;                                                  \
      LIGHTNING_ATTN_BIND_64_OR_128_(kVT, DV, __VA_ARGS__);                     \
    } else {                                                                    \
      constexpr int kDK = 256, kVT = 64;                                        \
      return __VA_ARGS__();                                                     \
    }                                                                           \
  }()

// Binds kDK, kDV (padded to 64 or 128) for the fused dk/dv sweep (Dk, Dv <= 128).
#define LIGHTNING_ATTN_DKDV_SHAPE_SWITCH(DK, DV, ...)                           \
  [&] {                                                                         \
    if ((DK) <= 64) {                                                           \
      constexpr int kDK = 64;                                                   \
      LIGHTNING_ATTN_BIND_64_OR_128_(kDV, DV, __VA_ARGS__);                     \
    }                                                                           \
    constexpr int kDK = 128;                                                    \
    LIGHTNING_ATTN_BIND_64_OR_128_(kDV, DV, __VA_ARGS__);                       \
  }()

// A value per device, computed on first use there (occupancies: they depend on the GPU).
template <typename F>
int per_device(std::vector<int>& cache, std::mutex& mutex, F&& compute) {
  int dev = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  const std::lock_guard<std::mutex> lock(mutex);
  if (cache.size() <= size_t(dev)) cache.resize(size_t(dev) + 1, -1);
  if (cache[dev] < 0) cache[dev] = compute();
  return cache[dev];
}

template <int DK, int VT, typename TIn>
int cached_chunk_blocks_per_sm(ChunkVariant v, bool state_only) {
  static std::mutex mutex;
  static std::vector<int> cache[4][2];
  return per_device(cache[int(v)][state_only], mutex,
                    [&] { return chunk_blocks_per_sm<DK, VT, TIn>(v, state_only); });
}

template <int DK, int DV, typename TIn>
int cached_dkdv_blocks_per_sm(DkDvVariant v) {
  static std::mutex mutex;
  static std::vector<int> cache[3];
  return per_device(cache[int(v)], mutex, [&] { return dkdv_blocks_per_sm<DK, DV, TIn>(v); });
}

// The kernels of one chunk problem: its full sweep (pass 2 of a split) and its state-only
// pass 1, with the blocks of each that fit on an SM.
struct ChunkChoice {
  ChunkVariant full = ChunkVariant::kPortable, state = ChunkVariant::kPortable;
  int full_blocks_per_sm = 1, state_blocks_per_sm = 1;
  bool tma_store = false;  // the full sweep stores o through TMA (maps.o)
  alignas(64) TmaMaps maps{};
  // Whether the full sweep adds into o as p.o_accumulate asked (else: a temporary and an add).
  bool accumulates() const { return full == ChunkVariant::kHopperAcc; }
};

// The o map of the TMA store (one 16-row box per warp): forward-time calls on whole sequences
// (a packed sequence's last chunk would write into the next one) whose output nests as
// [B, T, H, D].
template <typename TIn, int D>
bool o_store_map(const ChunkParams& p, const CallContext& c, TmaMaps& m) {
  return c.options.tma_loads && c.options.tma_stores && !p.reverse && !p.cu32 && !p.cu64 && p.o_vec &&
         make_tma_map(&m.o, p.o, std::is_same<TIn, __nv_bfloat16>::value, p.N, p.T, p.H, p.o_sb, p.o_st, p.o_sh,
                      16, D);
}

// q, k, v maps of the TMA loads: forward-time full calls on whole sequences (a packed
// sequence's last chunk would read the next sequence's rows; TMA zero-fills only past T)
// whose operands nest as [B, T, H, D].
template <typename TIn, int D>
bool load_maps(const ChunkParams& p, const CallContext& c, TmaMaps& m) {
  if (!c.options.tma_loads || p.reverse || p.o_accumulate || p.cu32 || p.cu64) return false;
  const bool bf16 = std::is_same<TIn, __nv_bfloat16>::value;
  auto map = [&](CUtensorMap* out, const void* x, int64_t sb, int64_t st, int64_t sh) {
    return make_tma_map(out, x, bf16, p.N, p.T, p.H, sb, st, sh, 64, D);
  };
  return map(&m.q, p.q, p.q_sb, p.q_st, p.q_sh) && map(&m.k, p.k, p.k_sb, p.k_st, p.k_sh) &&
         map(&m.v, p.v, p.v_sb, p.v_st, p.v_sh);
}

// The Hopper kernel serves Dk = Dv = D (128 or 64) with 16-byte aligned k and v: pass 1 in
// either direction, and forward-time full sweeps with aligned q and 4-byte aligned o pairs
// (adding into o: D = 128 with aligned o). The rest (reversed full sweeps, other shapes,
// float32) runs the portable kernel.
template <int DK, int VT, typename TIn>
ChunkChoice choose_chunk_kernel(const ChunkParams& p, const CallContext& c) {
  ChunkChoice ch;
  if constexpr (has_hopper_chunk<DK, VT, TIn>) {
    constexpr int D = DK;
    const bool hopper = p.Dk == D && p.Dv == D && p.k_vec && p.v_vec && hopper_for(c, D);
    const bool acc_ok = !p.o_accumulate || (D == 128 && c.options.accumulate_in_kernel && p.o_vec);
    if (hopper) ch.state = ChunkVariant::kHopper;
    if (hopper && acc_ok && !p.reverse && p.q_vec && p.o_vec2) {
      if (p.o_accumulate) {
        ch.full = ChunkVariant::kHopperAcc;  // cp.async loads (the old o rows too), TMA store of o + result
        ch.tma_store = o_store_map<TIn, D>(p, c, ch.maps);
      } else if (load_maps<TIn, D>(p, c, ch.maps)) {
        ch.full = ChunkVariant::kHopperTma;
        ch.tma_store = o_store_map<TIn, D>(p, c, ch.maps);
      } else {
        ch.full = ChunkVariant::kHopper;
      }
    }
  }
  ch.full_blocks_per_sm = cached_chunk_blocks_per_sm<DK, VT, TIn>(ch.full, false);
  ch.state_blocks_per_sm = cached_chunk_blocks_per_sm<DK, VT, TIn>(ch.state, true);
  return ch;
}

// The fused dk/dv sweep's kernel, with the blocks that fit on an SM.
struct DkDvChoice {
  DkDvVariant variant = DkDvVariant::kPortable;
  int blocks_per_sm = 1;
  alignas(64) DkDvMaps maps{};
  bool accumulates() const { return variant != DkDvVariant::kPortable; }
};

// The Hopper sweep serves Dk = Dv = D with 16-byte aligned inputs and 4-byte aligned dk, dv
// pairs; dv += in bf16 only (fp16's reduce-add in L2 might flush subnormals, which a separate
// add keeps). TMA stores of dk and dv on whole sequences (a packed sequence's partial chunk
// would write the previous sequence's rows) whose outputs nest as [B, T, H, D].
template <int DK, int DV, typename TIn>
DkDvChoice choose_dkdv_kernel(const DkDvParams& p, const CallContext& c) {
  DkDvChoice ch;
  if constexpr (has_hopper_dkdv<DK, DV, TIn>) {
    constexpr int D = DK;
    const bool bf16 = std::is_same<TIn, __nv_bfloat16>::value;
    const bool aligned = p.q_vec && p.k_vec && p.v_vec && p.do_vec && p.dk_vec2 && p.dv_vec2;
    const bool acc_ok = !p.dv_accumulate || (bf16 && c.options.accumulate_in_kernel);
    if (p.Dk == D && p.Dv == D && aligned && acc_ok && hopper_for(c, D)) {
      const bool stores = c.options.tma_loads && c.options.tma_stores && !p.cu32 && !p.cu64 &&
                          make_tma_map(&ch.maps.dk, p.dk, bf16, p.N, p.T, p.H, p.dk_sb, p.dk_st, p.dk_sh, 16, D) &&
                          make_tma_map(&ch.maps.dv, p.dv, bf16, p.N, p.T, p.H, p.dv_sb, p.dv_st, p.dv_sh, 16, D);
      ch.variant = stores ? DkDvVariant::kHopperTmaStore : DkDvVariant::kHopper;
    }
  }
  ch.blocks_per_sm = cached_dkdv_blocks_per_sm<DK, DV, TIn>(ch.variant);
  return ch;
}

// Whether a 16-bit call with head dims Dk, Dv in {128, 256} (not both 128) runs as 128-wide
// pieces on the Hopper kernels rather than on the portable 256-wide kernel (measured faster:
// docs/kernels.md). Columns of v are independent (each piece writes its columns of o and of
// the state), and the k dimension is a sum, o = o(q1, k1, v) + o(q2, k2, v) with the state's
// rows split the same way, so a second k piece adds its output into o.
inline bool hopper_pieces(at::ScalarType dtype, int64_t Dk, int64_t Dv, const CallContext& c) {
  if (dtype != at::kHalf && dtype != at::kBFloat16) return false;
  if ((Dk != 128 && Dk != 256) || (Dv != 128 && Dv != 256) || (Dk == 128 && Dv == 128)) return false;
  return c.device.hopper && c.options.hopper;
}

}  // namespace cuda
}  // namespace lightning_attn
