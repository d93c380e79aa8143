// Kernels that work on whole [Dk, Dv] states, element by element:
//  - the segment scan of the sequence split (S[j+1] = lambda^len_j S[j] + local[j]);
//  - the decoding step (state <- lambda state + k v^T in place, o = scale state^T q).
// Both are bound by memory: each state element is read and written once.
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
  float s = p.init ? p.init.ptr[n * p.init.sn + h * p.init.sh + i * p.init.sk + j * p.init.sv] : 0.f;
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
  const StateRef& F = p.final_state;
  if (F) F.ptr[n * F.sn + h * F.sh + i * F.sk + j * F.sv] = s;
}

// Decoding: one block per (b, h, slice of cw state columns); the slices let small batches
// (B x H well below the SM count) spread their state reads over many SMs, so a step costs
// about one DRAM round trip (measured: docs/kernels.md). Thread (rg, cg) owns
// columns [c0 + cg VEC, + VEC) of rows rg, rg + RG, ...; partial o sums are reduced across
// row groups in shared memory.
constexpr int kDecodeThreads = 256;

template <typename TIn, int VEC>
__global__ void __launch_bounds__(kDecodeThreads) decode_kernel(const DecodeParams p, int cw) {
  extern __shared__ float dsm[];
  const int b = blockIdx.x / p.H, h = blockIdx.x % p.H;
  const int c0 = blockIdx.y * cw;
  const int cols = min(cw, p.Dv - c0);
  float* sq = dsm;              // [Dk]
  float* sk = sq + p.Dk;        // [Dk]
  float* sv = sk + p.Dk;        // [cw]
  float* red = sv + cw;         // [RG, cw]
  const TIn* q = static_cast<const TIn*>(p.q) + b * p.q_sb + h * p.q_sh;
  const TIn* k = static_cast<const TIn*>(p.k) + b * p.k_sb + h * p.k_sh;
  const TIn* v = static_cast<const TIn*>(p.v) + b * p.v_sb + h * p.v_sh + c0;
  for (int i = threadIdx.x; i < p.Dk; i += kDecodeThreads) {
    sq[i] = to_float(q[i]);
    sk[i] = to_float(k[i]);
  }
  for (int j = threadIdx.x; j < cols; j += kDecodeThreads) sv[j] = to_float(v[j]);
  __syncthreads();

  const float lambda = exp2f(log2_lambda(p.slope, h));
  const int ncg = (cw + VEC - 1) / VEC;  // as on the host (the size of red)
  const int RG = kDecodeThreads / ncg;  // >= 1 since cw <= 256
  const int cg = threadIdx.x % ncg, rg = threadIdx.x / ncg;
  float acc[VEC];
#pragma unroll
  for (int e = 0; e < VEC; ++e) acc[e] = 0.f;
  float* S = p.state + (int64_t(b) * p.H + h) * p.Dk * p.Dv + c0;
  const int j0 = cg * VEC;
  if (rg < RG && j0 < cols) {  // cols: a multiple of VEC
    float vj[VEC];
#pragma unroll
    for (int e = 0; e < VEC; ++e) vj[e] = sv[j0 + e];
#pragma unroll 8
    for (int i = rg; i < p.Dk; i += RG) {
      float* row = S + int64_t(i) * p.Dv + j0;
      const float ki = sk[i], qi = sq[i];
      if constexpr (VEC == 4) {
        float4 s = *reinterpret_cast<float4*>(row);
        s.x = lambda * s.x + ki * vj[0];
        s.y = lambda * s.y + ki * vj[1];
        s.z = lambda * s.z + ki * vj[2];
        s.w = lambda * s.w + ki * vj[3];
        *reinterpret_cast<float4*>(row) = s;
        acc[0] += s.x * qi;
        acc[1] += s.y * qi;
        acc[2] += s.z * qi;
        acc[3] += s.w * qi;
      } else {
        const float s = lambda * row[0] + ki * vj[0];
        row[0] = s;
        acc[0] += s * qi;
      }
    }
#pragma unroll
    for (int e = 0; e < VEC; ++e) red[rg * cw + j0 + e] = acc[e];
  }
  __syncthreads();
  TIn* o = static_cast<TIn*>(p.o) + (int64_t(b) * p.H + h) * p.Dv + c0;
  for (int j = threadIdx.x; j < cols; j += kDecodeThreads) {
    float s = 0.f;
    for (int r = 0; r < RG; ++r) s += red[r * cw + j];
    o[j] = from_float<TIn>(p.scale * s);
  }
}

}  // namespace

void launch_scan(const ScanParams& p, cudaStream_t stream) {
  const int64_t elems = int64_t(p.Dk) * p.Dv;
  const dim3 grid(unsigned((elems + kScanThreads - 1) / kScanThreads), unsigned(p.N * p.H));
  scan_kernel<<<grid, kScanThreads, 0, stream>>>(p);
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
  const size_t smem = sizeof(float) * (2 * p.Dk + cw + size_t(RG) * cw);
  const dim3 grid{unsigned(bh), unsigned(nslice)};
  if (vec4)
    decode_kernel<TIn, 4><<<grid, kDecodeThreads, smem, stream>>>(p, cw);
  else
    decode_kernel<TIn, 1><<<grid, kDecodeThreads, smem, stream>>>(p, cw);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template void launch_decode<float>(const DecodeParams&, cudaStream_t);
template void launch_decode<__half>(const DecodeParams&, cudaStream_t);
template void launch_decode<__nv_bfloat16>(const DecodeParams&, cudaStream_t);

}  // namespace cuda
}  // namespace lightning_attn
