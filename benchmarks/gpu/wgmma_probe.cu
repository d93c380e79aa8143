// Checks the four wgmma operand forms of the Hopper chunk kernel (csrc/cuda/wgmma_utils.cuh)
// on their own, against a CPU product, so that a wrong descriptor shows which form it is:
//   scores  D = X Y^T   X [64,128] K-major A, Y [64,128] K-major B        (S = Q K^T)
//   regs    D = P V     P [64,64] register A, V [64,64] MN-major B         (mask(S) V)
//   update  D = K^T W   K [64,64] M-major (transposed) A, W MN-major B     (K^T (w V))
//   state   D = X R     X K-major A, R [128,64] MN-major B (tall panel)    (Q R)
// Build and run on an sm_90a GPU:
//   nvcc -std=c++17 -O2 -gencode=arch=compute_90a,code=sm_90a -Icsrc \
//     benchmarks/gpu/wgmma_probe.cu -o /tmp/wgmma_probe && /tmp/wgmma_probe
// Exit status 0 iff every form matches (max relative error < 1e-2).
#include <cuda_bf16.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "cuda/wgmma_utils.cuh"

using namespace lightning_attn::cuda;
using bf16 = __nv_bfloat16;

constexpr int kPanel = 64 * kPanelRowBytes;

// [rows, cols] row-major global -> panels of 64 columns (rows contiguous in each panel).
__device__ void to_panels(unsigned char* s, const bf16* g, int rows, int cols) {
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    const int r = i / cols, c = i % cols;
    *reinterpret_cast<bf16*>(s + (c / 64) * rows * kPanelRowBytes + panel_offset(r, c % 64)) = g[i];
  }
}

__device__ void store_acc(float* out, const float (&d)[8][4]) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, cq = lane % 4;
  for (int j = 0; j < 8; ++j)
    for (int e = 0; e < 4; ++e) out[(warp * 16 + g + (e / 2) * 8) * 64 + j * 8 + 2 * cq + (e % 2)] = d[j][e];
}

__global__ void probe(int form, const bf16* a, const bf16* b, float* out) {
  extern __shared__ __align__(1024) unsigned char smem[];
  unsigned char* sa = smem;
  unsigned char* sb = smem + 2 * kPanel;
  float d[8][4] = {};
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, cq = lane % 4;
  if (form == 0) {  // scores
    to_panels(sa, a, 64, 128);
    to_panels(sb, b, 64, 128);
  } else if (form == 1) {  // regs
    to_panels(sb, b, 64, 64);
  } else if (form == 2) {  // update
    to_panels(sa, a, 64, 64);
    to_panels(sb, b, 64, 64);
  } else {  // state
    to_panels(sa, a, 64, 128);
    to_panels(sb, b, 128, 64);
  }
  fence_proxy_async();
  __syncthreads();
  auto kmajor = [&](const unsigned char* t, int kk) { return smem_desc(t + (kk / 4) * kPanel + (kk % 4) * 32, 16, 1024); };
  auto mnmajor = [&](const unsigned char* t, int kk) { return smem_desc(t + kk * 16 * kPanelRowBytes, kPanel, 1024); };
  uint32_t af[4][4];
  if (form == 1) {  // P as m16n8k16-style A fragments of each warp's 16 rows
    auto pk = [&](int r, int c) {
      __nv_bfloat162 v;
      v.x = a[r * 64 + c];
      v.y = a[r * 64 + c + 1];
      return *reinterpret_cast<uint32_t*>(&v);
    };
    for (int kk = 0; kk < 4; ++kk) {
      const int r = warp * 16 + g, c = kk * 16 + 2 * cq;
      af[kk][0] = pk(r, c);
      af[kk][1] = pk(r + 8, c);
      af[kk][2] = pk(r, c + 8);
      af[kk][3] = pk(r + 8, c + 8);
    }
  }
  wgmma_fence();
  if (form == 0) {
    for (int kk = 0; kk < 8; ++kk) wgmma_ss<bf16, 0, 0>(d, kmajor(sa, kk), kmajor(sb, kk), kk);
  } else if (form == 1) {
    for (int kk = 0; kk < 4; ++kk) wgmma_rs<bf16, 1>(d, af[kk], mnmajor(sb, kk), kk);
  } else if (form == 2) {
    for (int kk = 0; kk < 4; ++kk) wgmma_ss<bf16, 1, 1>(d, mnmajor(sa, kk), mnmajor(sb, kk), kk);
  } else {
    for (int kk = 0; kk < 8; ++kk) wgmma_ss<bf16, 0, 1>(d, kmajor(sa, kk), mnmajor(sb, kk), kk);
  }
  wgmma_commit();
  wgmma_wait<0>();
  fence_regs(d);
  store_acc(out, d);
}

int main() {
  const char* names[4] = {"scores X Y^T (K-major A, K-major B)", "regs P V (register A, MN-major B)",
                          "update K^T W (M-major A, MN-major B)", "state X R (K-major A, MN-major B)"};
  const int arows[4] = {64, 64, 64, 64}, acols[4] = {128, 64, 64, 128};
  const int brows[4] = {64, 64, 64, 128}, bcols[4] = {128, 64, 64, 64};
  int failed = 0;
  srand(1);
  for (int form = 0; form < 4; ++form) {
    std::vector<float> A(arows[form] * acols[form]), B(brows[form] * bcols[form]), ref(64 * 64, 0.f), got(64 * 64);
    std::vector<bf16> Ah(A.size()), Bh(B.size());
    for (size_t i = 0; i < A.size(); ++i) Ah[i] = __float2bfloat16(float(rand()) / RAND_MAX - 0.5f), A[i] = __bfloat162float(Ah[i]);
    for (size_t i = 0; i < B.size(); ++i) Bh[i] = __float2bfloat16(float(rand()) / RAND_MAX - 0.5f), B[i] = __bfloat162float(Bh[i]);
    for (int m = 0; m < 64; ++m)
      for (int n = 0; n < 64; ++n) {
        double s = 0;
        if (form == 0) for (int k = 0; k < 128; ++k) s += A[m * 128 + k] * B[n * 128 + k];
        if (form == 1) for (int k = 0; k < 64; ++k) s += A[m * 64 + k] * B[k * 64 + n];
        if (form == 2) for (int k = 0; k < 64; ++k) s += A[k * 64 + m] * B[k * 64 + n];
        if (form == 3) for (int k = 0; k < 128; ++k) s += A[m * 128 + k] * B[k * 64 + n];
        ref[m * 64 + n] = float(s);
      }
    bf16 *da, *db;
    float* dout;
    cudaMalloc(&da, Ah.size() * 2);
    cudaMalloc(&db, Bh.size() * 2);
    cudaMalloc(&dout, 64 * 64 * 4);
    cudaMemcpy(da, Ah.data(), Ah.size() * 2, cudaMemcpyHostToDevice);
    cudaMemcpy(db, Bh.data(), Bh.size() * 2, cudaMemcpyHostToDevice);
    cudaMemset(dout, 0xff, 64 * 64 * 4);  // NaN: unwritten entries show
    cudaFuncSetAttribute(probe, cudaFuncAttributeMaxDynamicSharedMemorySize, 6 * kPanel);
    probe<<<1, 128, 6 * kPanel>>>(form, da, db, dout);
    const cudaError_t err = cudaDeviceSynchronize();
    cudaMemcpy(got.data(), dout, 64 * 64 * 4, cudaMemcpyDeviceToHost);
    double num = 0, den = 0;
    for (int i = 0; i < 64 * 64; ++i) {
      const double diff = std::fabs(double(got[i]) - ref[i]);
      num = std::isnan(diff) ? INFINITY : std::fmax(num, diff);
      den = std::fmax(den, std::fabs(double(ref[i])));
    }
    const double rel = num / den;
    const bool ok = err == cudaSuccess && rel < 1e-2;
    failed += !ok;
    printf("%-4s %-40s max rel err %.2e %s\n", ok ? "ok" : "FAIL", names[form], rel,
           err == cudaSuccess ? "" : cudaGetErrorString(err));
    cudaFree(da);
    cudaFree(db);
    cudaFree(dout);
  }
  return failed ? 1 : 0;
}
