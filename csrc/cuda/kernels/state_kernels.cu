// Kernels that work on whole [Dk, Dv] states, element by element:
//  - the segment scan of the sequence split (S[j+1] = lambda^len_j S[j] + local[j]);
//  - the checkpoints past a sequence's end (its final state repeated, after a prefill with
//    checkpoints: ChunkParams::ckpt);
//  - decoding, K tokens per sequence (state <- lambda state + k v^T in place, o = scale state^T q),
//    from the sequences' own states or from slots of a state pool.
// All are bound by memory: each state element is read once and written once per copy.
#include <algorithm>

#include "../launch.h"
#include "../params.h"
#include "../torch_cuda_headers.h"
#include "mma_utils.cuh"

namespace lightning_attn {
namespace cuda {
namespace {

constexpr int kScanThreads = 256;

__global__ void __launch_bounds__(kScanThreads) scan_kernel(const ScanParams p) {
  const int64_t e = int64_t(blockIdx.x) * kScanThreads + threadIdx.x;
  if (e >= int64_t(p.Dk) * p.Dv) return;
  const int i = int(e / p.Dv), j = int(e % p.Dv);
  const int nh = blockIdx.y, n = nh / p.H, h = nh % p.H;
  int64_t start, len;
  sequence_range(p.cu32, p.cu64, n, p.T, start, len);
  const float l2 = log2_lambda(p.slope, h);
  const float* init = p.init.row_at(0, n, h);
  float s = init ? init[i * p.init.sk + j * p.init.sv] : 0.f;
  const StateRef& L = p.local;
  const StateRef& I = p.s_in;
  const int64_t loc_off = n * L.sn + h * L.sh + i * L.sk + j * L.sv + (j >> 6) * L.spx;
  const int64_t in_off = n * I.sn + h * I.sh + i * I.sk + j * I.sv + (j >> 6) * I.spx;
  // segments with tokens; past nlocal (the last segment's sub-segments when no final state is
  // asked) only s_in stores remain. The local states are loaded kU at a time ahead of the
  // dependent chain: one DRAM round trip per kU sub-segments instead of one each.
  const int nvalid = len <= 0 ? 0 : int(std::min<int64_t>(p.nseg, (len + p.seg_len - 1) / p.seg_len));
  constexpr int kU = 8;
  for (int base = 0; base < nvalid; base += kU) {
    float loc[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int seg = base + u;
      loc[u] = seg < nvalid && seg < p.nlocal ? L.ptr[seg * L.sseg + loc_off] : 0.f;
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int seg = base + u;
      if (seg >= nvalid || seg > p.nlocal) break;
      if (seg % p.F == 0) I.ptr[(seg / p.F) * I.sseg + in_off] = s;
      if (seg == p.nlocal) break;  // the last segment's own state is not needed
      const int64_t rest = len - int64_t(seg) * p.seg_len;
      s = exp2f(float(rest < p.seg_len ? rest : p.seg_len) * l2) * s + loc[u];
    }
  }
  if (float* final_state = p.final_state.row_at(0, n, h)) final_state[i * p.final_state.sk + j * p.final_state.sv] = s;
}

// One thread per state element of one (sequence, head) of forward problem p: its final state
// into every checkpoint from len / ckpt_every on; the sweep wrote the checkpoints before it.
__global__ void __launch_bounds__(kScanThreads) checkpoint_tail_kernel(const ChunkParams p, const StateRef fin) {
  const int64_t e = int64_t(blockIdx.y) * kScanThreads + threadIdx.x;
  if (e >= int64_t(p.Dk) * p.Dv) return;
  const int i = int(e / p.Dv), j = int(e % p.Dv);
  const int nh = blockIdx.x, n = nh / p.H, h = nh % p.H;  // N x H on x: it may pass 65,535
  const float* f = fin.row_at(0, n, h);
  if (f == nullptr) return;
  int64_t start, len;
  sequence_range(p.cu32, p.cu64, n, p.T, start, len);
  const float s = f[i * fin.sk + j * fin.sv];
  for (int64_t c = len / p.ckpt_every; c < p.nckpt; ++c) p.ckpt.at(c, n, h)[i * p.ckpt.sk + j * p.ckpt.sv] = s;
}

// Decoding: K tokens (1 for a plain step, up to kMaxDecodeTokens for speculative verify) of
// each sequence from its state. One block per (b, h, slice of cw state columns); the slices let
// small batches (B x H well below the SM count) spread their state reads over many SMs, so a
// step costs about one DRAM round trip (measured: docs/kernels.md). Thread (rg, cg) owns columns
// [c0 + cg VEC, + VEC) of rows rg, rg + RG, ...: it reads each of its state elements once, runs
// the K tokens on it in registers, and writes it back once (after p.num_accepted[b] tokens, or
// all K). Partial o sums are reduced across row groups in shared memory, one token at a time.
constexpr int kDecodeThreads = 256;

template <int VEC>
__device__ __forceinline__ void load_vec(const float* p, float (&x)[VEC]) {
  if constexpr (VEC == 4) {
    const float4 t = *reinterpret_cast<const float4*>(p);
    x[0] = t.x, x[1] = t.y, x[2] = t.z, x[3] = t.w;
  } else {
    x[0] = p[0];
  }
}

template <int VEC>
__device__ __forceinline__ void store_vec(float* p, const float (&x)[VEC]) {
  if constexpr (VEC == 4)
    *reinterpret_cast<float4*>(p) = make_float4(x[0], x[1], x[2], x[3]);
  else
    p[0] = x[0];
}

template <typename TIn, int VEC>
__global__ void __launch_bounds__(kDecodeThreads) decode_kernel(const DecodeParams p, int cw) {
  extern __shared__ float dsm[];
  const int b = blockIdx.x / p.H, h = blockIdx.x % p.H;
  const int c0 = blockIdx.y * cw;
  const int cols = min(cw, p.Dv - c0);
  const int K = p.K;
  const int64_t o_st = int64_t(p.H) * p.Dv;              // o: [B, K, H, Dv]
  const int64_t s_st = int64_t(p.H) * p.Dk * p.Dv;       // states: [B, K, H, Dk, Dv]
  TIn* o = static_cast<TIn*>(p.o) + int64_t(b) * K * o_st + int64_t(h) * p.Dv + c0;
  float* St = p.states ? p.states + int64_t(b) * K * s_st + int64_t(h) * p.Dk * p.Dv + c0 : nullptr;
  // The state row: the sequence's own, or its pool slot. A slot outside [0, num_slots) (-1:
  // no request in this batch row) leaves the pool untouched and gives zero outputs.
  const int row = p.slot_ids ? p.slot_ids[b] : b;
  if (row < 0 || row >= p.num_slots) {  // the same for the whole block
    for (int t = 0; t < K; ++t)
      for (int j = threadIdx.x; j < cols; j += kDecodeThreads) o[t * o_st + j] = from_float<TIn>(0.f);
    if (St)
      for (int t = 0; t < K; ++t)
        for (int64_t e = threadIdx.x; e < int64_t(p.Dk) * cols; e += kDecodeThreads)
          St[t * s_st + (e / cols) * p.Dv + e % cols] = 0.f;
    return;
  }
  float* sq = dsm;              // [K, Dk]
  float* sk = sq + K * p.Dk;    // [K, Dk]
  float* sv = sk + K * p.Dk;    // [K, cw]
  float* red = sv + K * cw;     // [RG, cw]
  for (int t = 0; t < K; ++t) {
    const TIn* q = static_cast<const TIn*>(p.q) + b * p.q_sb + t * p.q_st + h * p.q_sh;
    const TIn* k = static_cast<const TIn*>(p.k) + b * p.k_sb + t * p.k_st + h * p.k_sh;
    const TIn* v = static_cast<const TIn*>(p.v) + b * p.v_sb + t * p.v_st + h * p.v_sh + c0;
    for (int i = threadIdx.x; i < p.Dk; i += kDecodeThreads) {
      sq[t * p.Dk + i] = to_float(q[i]);
      sk[t * p.Dk + i] = to_float(k[i]);
    }
    for (int j = threadIdx.x; j < cols; j += kDecodeThreads) sv[t * cw + j] = to_float(v[j]);
  }
  __syncthreads();

  const float lambda = exp2f(log2_lambda(p.slope, h));
  // Tokens the state advances by: the accepted ones, all K, or none (states returned instead).
  const int advance = p.num_accepted ? min(max(p.num_accepted[b], 0), K) : (p.advance_all ? K : 0);
  const int ncg = (cw + VEC - 1) / VEC;  // as on the host (the size of red)
  const int RG = kDecodeThreads / ncg;  // >= 1 since cw <= 256
  const int cg = threadIdx.x % ncg, rg = threadIdx.x / ncg;
  float acc[kMaxDecodeTokens][VEC];
#pragma unroll
  for (int t = 0; t < kMaxDecodeTokens; ++t)
#pragma unroll
    for (int e = 0; e < VEC; ++e) acc[t][e] = 0.f;
  float* S = p.state + (int64_t(row) * p.H + h) * p.Dk * p.Dv + c0;
  const int j0 = cg * VEC;
  if (rg < RG && j0 < cols) {  // cols: a multiple of VEC
#pragma unroll 4
    for (int i = rg; i < p.Dk; i += RG) {
      float s[VEC], keep[VEC];
      load_vec<VEC>(S + int64_t(i) * p.Dv + j0, s);
#pragma unroll
      for (int e = 0; e < VEC; ++e) keep[e] = s[e];
#pragma unroll
      for (int t = 0; t < kMaxDecodeTokens; ++t) {
        if (t < K) {
          const float ki = sk[t * p.Dk + i], qi = sq[t * p.Dk + i];
#pragma unroll
          for (int e = 0; e < VEC; ++e) {
            s[e] = lambda * s[e] + ki * sv[t * cw + j0 + e];
            acc[t][e] += s[e] * qi;
          }
          if (St) store_vec<VEC>(St + t * s_st + int64_t(i) * p.Dv + j0, s);
          if (t + 1 == advance)
#pragma unroll
            for (int e = 0; e < VEC; ++e) keep[e] = s[e];
        }
      }
      if (advance > 0) store_vec<VEC>(S + int64_t(i) * p.Dv + j0, keep);
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxDecodeTokens; ++t) {
    if (t < K) {
      if (t > 0) __syncthreads();  // the previous token's sums are read
      if (rg < RG && j0 < cols)
#pragma unroll
        for (int e = 0; e < VEC; ++e) red[rg * cw + j0 + e] = acc[t][e];
      __syncthreads();
      for (int j = threadIdx.x; j < cols; j += kDecodeThreads) {
        float sum = 0.f;
        for (int r = 0; r < RG; ++r) sum += red[r * cw + j];
        o[t * o_st + j] = from_float<TIn>(p.scale * sum);
      }
    }
  }
}

}  // namespace

void launch_scan(const ScanParams& p, cudaStream_t stream) {
  const int64_t elems = int64_t(p.Dk) * p.Dv;
  const dim3 grid(unsigned((elems + kScanThreads - 1) / kScanThreads), unsigned(p.N * p.H));
  scan_kernel<<<grid, kScanThreads, 0, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void launch_checkpoint_tail(const ChunkParams& p, const StateRef& final_state, cudaStream_t stream) {
  if (p.nckpt == 0 || p.N == 0 || p.H == 0) return;
  const int64_t elems = int64_t(p.Dk) * p.Dv;
  const dim3 grid(unsigned(int64_t(p.N) * p.H), unsigned((elems + kScanThreads - 1) / kScanThreads));
  checkpoint_tail_kernel<<<grid, kScanThreads, 0, stream>>>(p, final_state);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename TIn>
void launch_decode(const DecodeParams& p, cudaStream_t stream) {
  if (p.B == 0 || p.H == 0) return;
  // float4 rows need Dv % 4 == 0 (the state is contiguous and 16-byte aligned then).
  const bool vec4 = p.Dv % 4 == 0 && reinterpret_cast<uintptr_t>(p.state) % 16 == 0;
  const int vec = vec4 ? 4 : 1;
  // Column slices (at least 16 columns) until the grid covers about two blocks per SM.
  int dev = 0, sms = 132;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  const int64_t bh = int64_t(p.B) * p.H;
  const int64_t want = (2 * int64_t(sms) + bh - 1) / bh;
  const int max_slices = std::max(1, p.Dv / 16);
  const int slices = int(std::min<int64_t>(want, max_slices));
  const int cw = ((p.Dv + slices - 1) / slices + vec - 1) / vec * vec;
  const int nslice = (p.Dv + cw - 1) / cw;
  const int ncg = (cw + vec - 1) / vec;
  const int RG = kDecodeThreads / ncg;
  const size_t smem = sizeof(float) * (size_t(p.K) * (2 * p.Dk + cw) + size_t(RG) * cw);  // <= 52 KiB
  const dim3 grid{unsigned(bh), unsigned(nslice)};
  auto launch = [&](auto kernel) {
    if (smem > 48 * 1024)
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
    kernel<<<grid, kDecodeThreads, smem, stream>>>(p, cw);
  };
  if (vec4)
    launch(decode_kernel<TIn, 4>);
  else
    launch(decode_kernel<TIn, 1>);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void launch_decode<float>(const DecodeParams&, cudaStream_t);
template void launch_decode<__half>(const DecodeParams&, cudaStream_t);
template void launch_decode<__nv_bfloat16>(const DecodeParams&, cudaStream_t);

}  // namespace cuda
}  // namespace lightning_attn
