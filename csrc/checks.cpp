#include "checks.h"

#include <c10/util/Exception.h>

namespace lightning_attn {
namespace {

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

void check_same_device(const at::Tensor& x, const char* name, const at::Tensor& q) {
  TORCH_CHECK_VALUE(x.device() == q.device(), "lightning_attn: ", name,
                    " must be on the same device as q (", q.device(), "), got ", x.device());
}

void check_last_dim_contiguous(const at::Tensor& x, const char* name) {
  TORCH_CHECK_VALUE(x.size(-1) <= 1 || x.stride(-1) == 1, "lightning_attn: ", name,
                    " must have a contiguous last dimension (stride 1), got strides ",
                    x.strides());
}

void check_state(const at::Tensor& s, const char* name, const AttnDims& d, const at::Tensor& q) {
  check_same_device(s, name, q);
  TORCH_CHECK_VALUE(s.dim() == 4 && s.size(0) == d.N && s.size(1) == d.H && s.size(2) == d.Dk &&
                        s.size(3) == d.Dv,
                    "lightning_attn: ", name, " must have shape [N, H, Dk, Dv] = [", d.N, ", ",
                    d.H, ", ", d.Dk, ", ", d.Dv, "], got ", s.sizes());
  TORCH_CHECK_VALUE(s.scalar_type() == d.state_dtype, "lightning_attn: ", name, " must be ",
                    d.state_dtype, " (the state is kept in float32), got ", s.scalar_type());
}

}  // namespace

AttnDims check_fwd_inputs(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                          const std::optional<at::Tensor>& slope,
                          const std::optional<at::Tensor>& initial_state,
                          const std::optional<at::Tensor>& cu_seqlens, bool head_first) {
  const char* layout = head_first ? "[B, H, T, D] (head_first=True)" : "[B, T, H, D]";
  for (auto [x, name] : {std::pair{&q_in, "q"}, {&k_in, "k"}, {&v_in, "v"}}) {
    TORCH_CHECK_VALUE(x->dim() == 4, "lightning_attn: ", name, " must be a 4-D tensor ", layout,
                      ", got shape ", x->sizes());
  }
  TORCH_CHECK_VALUE(is_supported_dtype(q_in.scalar_type()),
                    "lightning_attn: q must be float32, float16 or bfloat16, got ",
                    q_in.scalar_type());
  for (auto [x, name] : {std::pair{&k_in, "k"}, {&v_in, "v"}}) {
    TORCH_CHECK_VALUE(x->scalar_type() == q_in.scalar_type(), "lightning_attn: ", name,
                      " must have q's dtype (", q_in.scalar_type(), "), got ", x->scalar_type());
    check_same_device(*x, name, q_in);
  }
  const at::Tensor q = canonical(q_in, head_first), k = canonical(k_in, head_first),
                   v = canonical(v_in, head_first);
  AttnDims d;
  d.B = q.size(0), d.T = q.size(1), d.H = q.size(2), d.Dk = q.size(3), d.Dv = v.size(3);
  TORCH_CHECK_VALUE(k.size(0) == d.B && k.size(1) == d.T && k.size(2) == d.H && k.size(3) == d.Dk,
                    "lightning_attn: k must have q's shape ", q_in.sizes(), ", got ",
                    k_in.sizes());
  TORCH_CHECK_VALUE(v.size(0) == d.B && v.size(1) == d.T && v.size(2) == d.H,
                    "lightning_attn: v must match q in B, T and H (q ", q_in.sizes(), "), got ",
                    v_in.sizes());
  TORCH_CHECK_VALUE(d.T >= 1 && d.H >= 1 && d.B >= 1,
                    "lightning_attn: q must have B, T, H >= 1, got ", q_in.sizes());
  TORCH_CHECK_VALUE(d.Dk >= 1 && d.Dk <= kMaxHeadDim, "lightning_attn: q and k head dim Dk must be in [1, ",
                    kMaxHeadDim, "], got ", d.Dk);
  TORCH_CHECK_VALUE(d.Dv >= 1 && d.Dv <= kMaxHeadDim, "lightning_attn: v head dim Dv must be in [1, ",
                    kMaxHeadDim, "], got ", d.Dv);
  check_last_dim_contiguous(q, "q");
  check_last_dim_contiguous(k, "k");
  check_last_dim_contiguous(v, "v");
  d.state_dtype = acc_dtype(q);

  if (slope.has_value()) {
    const at::Tensor& s = *slope;
    check_same_device(s, "slope", q);
    TORCH_CHECK_VALUE(s.dim() == 1 && s.size(0) == d.H,
                      "lightning_attn: slope must have shape [H] = [", d.H, "], got ", s.sizes());
    TORCH_CHECK_VALUE(s.scalar_type() == at::kFloat || s.scalar_type() == d.state_dtype,
                      "lightning_attn: slope must be float32, got ", s.scalar_type());
    if (s.is_cpu()) check_slope_values(s);
  }

  d.varlen = cu_seqlens.has_value();
  d.N = d.B;
  if (d.varlen) {
    const at::Tensor& cu = *cu_seqlens;
    check_same_device(cu, "cu_seqlens", q);
    TORCH_CHECK_VALUE(cu.scalar_type() == at::kInt || cu.scalar_type() == at::kLong,
                      "lightning_attn: cu_seqlens must be int32 or int64, got ", cu.scalar_type());
    TORCH_CHECK_VALUE(cu.dim() == 1 && cu.size(0) >= 2,
                      "lightning_attn: cu_seqlens must be 1-D [N + 1] with N >= 1, got shape ",
                      cu.sizes());
    TORCH_CHECK_VALUE(d.B == 1, "lightning_attn: with cu_seqlens the batch must be packed into B = 1, got B = ",
                      d.B);
    d.N = cu.size(0) - 1;
    if (cu.is_cpu()) check_cu_seqlens_values(cu, d.T);
  }
  if (initial_state.has_value()) check_state(*initial_state, "initial_state", d, q);
  return d;
}

void check_bwd_inputs(const at::Tensor& dout_in, const at::Tensor& v_in, const AttnDims& d,
                      const std::optional<at::Tensor>& d_final_state, bool head_first) {
  TORCH_CHECK_VALUE(dout_in.sizes() == v_in.sizes(), "lightning_attn: do must have v's shape ",
                    v_in.sizes(), ", got ", dout_in.sizes());
  TORCH_CHECK_VALUE(dout_in.scalar_type() == v_in.scalar_type(),
                    "lightning_attn: do must have q's dtype (", v_in.scalar_type(), "), got ",
                    dout_in.scalar_type());
  check_same_device(dout_in, "do", v_in);
  check_last_dim_contiguous(canonical(dout_in, head_first), "do");
  if (d_final_state.has_value()) check_state(*d_final_state, "d_final_state", d, v_in);
}

void check_decode_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& state, const std::optional<at::Tensor>& slope) {
  for (auto [x, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}}) {
    TORCH_CHECK_VALUE(x->dim() == 3, "lightning_attn.decode: ", name,
                      " must be a 3-D tensor [B, H, D], got shape ", x->sizes());
    check_same_device(*x, name, q);
    TORCH_CHECK_VALUE(x->scalar_type() == q.scalar_type(), "lightning_attn.decode: ", name,
                      " must have q's dtype (", q.scalar_type(), "), got ", x->scalar_type());
    check_last_dim_contiguous(*x, name);
  }
  TORCH_CHECK_VALUE(is_supported_dtype(q.scalar_type()),
                    "lightning_attn.decode: q must be float32, float16 or bfloat16, got ",
                    q.scalar_type());
  const int64_t B = q.size(0), H = q.size(1), Dk = q.size(2), Dv = v.size(2);
  TORCH_CHECK_VALUE(k.sizes() == q.sizes(), "lightning_attn.decode: k must have q's shape ",
                    q.sizes(), ", got ", k.sizes());
  TORCH_CHECK_VALUE(v.size(0) == B && v.size(1) == H,
                    "lightning_attn.decode: v must be [B, H, Dv] with q's B and H, got ", v.sizes());
  TORCH_CHECK_VALUE(Dk <= kMaxHeadDim && Dv <= kMaxHeadDim,
                    "lightning_attn.decode: head dims must be <= ", kMaxHeadDim, ", got Dk = ", Dk,
                    ", Dv = ", Dv);
  const auto state_dtype = acc_dtype(q);
  check_same_device(state, "state", q);
  TORCH_CHECK_VALUE(state.dim() == 4 && state.size(0) == B && state.size(1) == H &&
                        state.size(2) == Dk && state.size(3) == Dv,
                    "lightning_attn.decode: state must have shape [B, H, Dk, Dv] = [", B, ", ", H,
                    ", ", Dk, ", ", Dv, "], got ", state.sizes());
  TORCH_CHECK_VALUE(state.scalar_type() == state_dtype, "lightning_attn.decode: state must be ",
                    state_dtype, ", got ", state.scalar_type());
  TORCH_CHECK_VALUE(state.is_contiguous(),
                    "lightning_attn.decode: state must be contiguous (it is updated in place)");
  if (slope.has_value()) {
    check_same_device(*slope, "slope", q);
    TORCH_CHECK_VALUE(slope->dim() == 1 && slope->size(0) == H,
                      "lightning_attn.decode: slope must have shape [H] = [", H, "], got ",
                      slope->sizes());
    TORCH_CHECK_VALUE(slope->scalar_type() == at::kFloat || slope->scalar_type() == state_dtype,
                      "lightning_attn.decode: slope must be float32, got ", slope->scalar_type());
    if (slope->is_cpu()) check_slope_values(*slope);
  }
}

void check_srms_norm_input(const at::Tensor& x, double eps) {
  TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) >= 1,
                    "lightning_attn.srms_norm: x must have a non-empty last dimension, got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(is_supported_dtype(x.scalar_type()),
                    "lightning_attn.srms_norm: x must be float32, float16 or bfloat16, got ",
                    x.scalar_type());
  TORCH_CHECK_VALUE(eps >= 0, "lightning_attn.srms_norm: eps must be >= 0, got ", eps);
}

void check_slope_values(const at::Tensor& slope) {
  TORCH_CHECK_VALUE(!(slope < 0).any().item<bool>() && !slope.isnan().any().item<bool>(),
                    "lightning_attn: slope must be >= 0 (decay lambda = exp(-slope) <= 1), got ",
                    slope);
}

void check_cu_seqlens_values(const at::Tensor& cu, int64_t T) {
  const at::Tensor c = cu.to(at::kLong);
  TORCH_CHECK_VALUE(c[0].item<int64_t>() == 0, "lightning_attn: cu_seqlens must start at 0, got ",
                    c[0].item<int64_t>());
  TORCH_CHECK_VALUE(c[-1].item<int64_t>() == T,
                    "lightning_attn: cu_seqlens must end at the packed length T = ", T, ", got ",
                    c[-1].item<int64_t>());
  TORCH_CHECK_VALUE(!(c.diff() < 0).any().item<bool>(),
                    "lightning_attn: cu_seqlens must be non-decreasing, got ", c);
}

}  // namespace lightning_attn
