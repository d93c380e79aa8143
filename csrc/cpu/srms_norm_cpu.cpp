// CPU kernels of SRMSNorm (TNL's norm, no learned gain):
//   y = x * rstd,  rstd = rsqrt(mean(x^2, -1) + eps)
//   dx = rstd * (dy - x * rstd^2 * mean(dy * x, -1))
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "cpu_guard.h"

namespace lightning_attn {
namespace {

using at::Tensor;

std::tuple<Tensor, Tensor> srms_norm_fwd_cpu(const Tensor& x, double eps) {
  const CpuKernelGuard guard;
  check_srms_norm_input(x, eps);
  const Tensor xf = x.to(acc_dtype(x));
  const Tensor rstd = at::rsqrt(xf.square().mean(-1) + eps);
  return {(xf * rstd.unsqueeze(-1)).to(x.scalar_type()), rstd};
}

Tensor srms_norm_bwd_cpu(const Tensor& dy, const Tensor& x, const Tensor& rstd) {
  const CpuKernelGuard guard;
  check_srms_norm_bwd_inputs(dy, x, rstd);
  const auto acc = acc_dtype(x);
  const Tensor xf = x.to(acc), dyf = dy.to(acc), r = rstd.to(acc).unsqueeze(-1);
  const Tensor dot = (dyf * xf).mean(-1, /*keepdim=*/true);
  return (r * (dyf - xf * r.square() * dot)).to(x.scalar_type());
}

}  // namespace

TORCH_LIBRARY_IMPL(lightning_attn, CPU, m) {
  m.impl("srms_norm_fwd", &srms_norm_fwd_cpu);
  m.impl("srms_norm_bwd", &srms_norm_bwd_cpu);
}

}  // namespace lightning_attn
