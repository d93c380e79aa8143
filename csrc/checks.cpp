#include "checks.h"

#include <c10/core/SymBool.h>
#include <c10/core/SymNodeImpl.h>
#include <c10/util/Exception.h>

// A rule on sizes or strides (a c10::SymBool): decided at once for concrete sizes; a guard
// for symbolic ones (a deferred runtime assert where they have no hint), as TORCH_SYM_CHECK
// does, but raising ValueError.
#define LA_CHECK_SYM(cond, ...) TORCH_CHECK_VALUE((cond).expect_true(__FILE__, __LINE__), __VA_ARGS__)

namespace lightning_attn {
namespace {

using c10::SymBool;
using c10::SymInt;
using c10::SymIntArrayRef;

bool is_supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kHalf || t == at::kBFloat16 || t == at::kDouble;
}

SymBool shape_is(SymIntArrayRef got, SymIntArrayRef want) {
  if (got.size() != want.size()) return false;
  SymBool eq = true;
  for (size_t i = 0; i < got.size(); ++i) eq = eq & got[i].sym_eq(want[i]);
  return eq;
}

// Sizes in messages: the integer where it is known, the symbol's expression under tracing.
// Every number in a message goes through std::to_string, never through std::ostream: on the GPU
// machine (torch 2.11; the extension built by /opt/gcc's g++, run against the system libstdc++
// 6.0.33) inserting an integer into the message stream crashed the process with SIGSEGV.
std::string str(const SymInt& s) {
  if (const auto v = s.maybe_as_int()) return std::to_string(*v);
  return s.toSymNodeImplUnowned()->str();
}

std::string str(SymIntArrayRef a) {
  std::string out = "[";
  for (size_t i = 0; i < a.size(); ++i) out += (i ? ", " : "") + str(a[i]);
  return out + "]";
}

SymBool in_range(const SymInt& x, int64_t lo, int64_t hi) { return x.sym_ge(lo) & x.sym_le(hi); }

void check_same_device(const at::Tensor& x, const char* op, const char* name, const at::Tensor& ref,
                       const char* ref_name) {
  TORCH_CHECK_VALUE(x.device() == ref.device(), op, ": ", name, " must be on the same device as ",
                    ref_name, " (", ref.device(), "), got ", x.device());
}

void check_float_dtype(const at::Tensor& x, const char* op, const char* name) {
  TORCH_CHECK_VALUE(is_supported_dtype(x.scalar_type()), op, ": ", name,
                    " must be float32, float16 or bfloat16, got ", x.scalar_type());
}

void check_last_dim_contiguous(const at::Tensor& x, const char* op, const char* name) {
  LA_CHECK_SYM(x.sym_size(-1).sym_le(1) | x.sym_stride(-1).sym_eq(1), op, ": ", name,
               " must have a contiguous last dimension (stride 1), got strides ", str(x.sym_strides()));
}

void check_head_dims(const SymInt& Dk, const SymInt& Dv, const char* op) {
  LA_CHECK_SYM(in_range(Dk, 1, kMaxHeadDim), op, ": q and k head dim Dk must be in [1, ", std::to_string(kMaxHeadDim),
               "], got ", str(Dk));
  LA_CHECK_SYM(in_range(Dv, 1, kMaxHeadDim), op, ": v head dim Dv must be in [1, ", std::to_string(kMaxHeadDim),
               "], got ", str(Dv));
}

// A state [rows, H, Dk, Dv] in the state dtype; rows_name is "N" or "B" for the message.
void check_state(const at::Tensor& s, const char* op, const char* name, const char* rows_name,
                 const SymInt& rows, const SymAttnDims& d, const at::Tensor& q) {
  check_same_device(s, op, name, q, "q");
  LA_CHECK_SYM(shape_is(s.sym_sizes(), {rows, d.H, d.Dk, d.Dv}), op, ": ", name, " must have shape [",
               rows_name, ", H, Dk, Dv] = [", str(rows), ", ", str(d.H), ", ", str(d.Dk), ", ", str(d.Dv), "], got ",
               str(s.sym_sizes()));
  TORCH_CHECK_VALUE(s.scalar_type() == d.state_dtype, op, ": ", name, " must be ", d.state_dtype,
                    " (the state is kept in float32), got ", s.scalar_type());
}

// slope: [H] float32 (or the state dtype), >= 0 where its values can be read.
void check_slope(const std::optional<at::Tensor>& slope, const char* op, const SymInt& H,
                 at::ScalarType state_dtype, const at::Tensor& q) {
  if (!slope.has_value()) return;
  const at::Tensor& s = *slope;
  check_same_device(s, op, "slope", q, "q");
  LA_CHECK_SYM(shape_is(s.sym_sizes(), {H}), op, ": slope must have shape [H] = [", str(H), "], got ",
               str(s.sym_sizes()));
  TORCH_CHECK_VALUE(s.scalar_type() == at::kFloat || s.scalar_type() == state_dtype, op,
                    ": slope must be float32, got ", s.scalar_type());
  if (s.is_cpu()) check_slope_values(s);
}

constexpr const char* kFwd = "lightning_attn";
constexpr const char* kDecode = "lightning_attn.decode";
constexpr const char* kDecodeTokens = "lightning_attn.decode_tokens";
constexpr const char* kSrms = "lightning_attn.srms_norm";

// x of srms_norm_fwd and srms_norm_bwd: [..., D], D >= 1, a float dtype.
void check_srms_norm_x(const at::Tensor& x) {
  LA_CHECK_SYM(x.dim() >= 1 ? x.sym_size(-1).sym_ge(1) : SymBool(false), kSrms,
               ": x must have a non-empty last dimension, got shape ", str(x.sym_sizes()));
  check_float_dtype(x, kSrms, "x");
}

// The sizes of concrete tensors' checks as integers.
AttnDims concrete(const SymAttnDims& s) {
  return {s.B.expect_int(), s.T.expect_int(),  s.H.expect_int(), s.Dk.expect_int(),
          s.Dv.expect_int(), s.N.expect_int(), s.varlen,         s.state_dtype};
}

}  // namespace

SymAttnDims check_fwd_inputs_sym(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                                 const std::optional<at::Tensor>& slope,
                                 const std::optional<at::Tensor>& initial_state,
                                 const std::optional<at::Tensor>& cu_seqlens, bool head_first) {
  const char* layout = head_first ? "[B, H, T, D] (head_first=True)" : "[B, T, H, D]";
  for (auto [x, name] : {std::pair{&q_in, "q"}, {&k_in, "k"}, {&v_in, "v"}}) {
    TORCH_CHECK_VALUE(x->dim() == 4, kFwd, ": ", name, " must be a 4-D tensor ", layout,
                      ", got shape ", str(x->sym_sizes()));
  }
  check_float_dtype(q_in, kFwd, "q");
  for (auto [x, name] : {std::pair{&k_in, "k"}, {&v_in, "v"}}) {
    TORCH_CHECK_VALUE(x->scalar_type() == q_in.scalar_type(), kFwd, ": ", name,
                      " must have q's dtype (", q_in.scalar_type(), "), got ", x->scalar_type());
    check_same_device(*x, kFwd, name, q_in, "q");
  }
  const at::Tensor q = canonical(q_in, head_first), k = canonical(k_in, head_first),
                   v = canonical(v_in, head_first);
  SymAttnDims d{q.sym_size(0), q.sym_size(1), q.sym_size(2), q.sym_size(3), v.sym_size(3),
                q.sym_size(0), cu_seqlens.has_value(), acc_dtype(q)};
  LA_CHECK_SYM(shape_is(k.sym_sizes(), q.sym_sizes()), kFwd, ": k must have q's shape ",
               str(q_in.sym_sizes()), ", got ", str(k_in.sym_sizes()));
  LA_CHECK_SYM(shape_is(v.sym_sizes().slice(0, 3), {d.B, d.T, d.H}), kFwd,
               ": v must match q in B, T and H (q ", str(q_in.sym_sizes()), "), got ", str(v_in.sym_sizes()));
  LA_CHECK_SYM(d.T.sym_ge(1) & d.H.sym_ge(1) & d.B.sym_ge(1), kFwd,
               ": q must have B, T, H >= 1, got ", str(q_in.sym_sizes()));
  check_head_dims(d.Dk, d.Dv, kFwd);
  check_last_dim_contiguous(q, kFwd, "q");
  check_last_dim_contiguous(k, kFwd, "k");
  check_last_dim_contiguous(v, kFwd, "v");
  check_slope(slope, kFwd, d.H, d.state_dtype, q);

  if (d.varlen) {
    const at::Tensor& cu = *cu_seqlens;
    check_same_device(cu, kFwd, "cu_seqlens", q, "q");
    TORCH_CHECK_VALUE(cu.scalar_type() == at::kInt || cu.scalar_type() == at::kLong, kFwd,
                      ": cu_seqlens must be int32 or int64, got ", cu.scalar_type());
    LA_CHECK_SYM(cu.dim() == 1 ? cu.sym_size(0).sym_ge(2) : SymBool(false), kFwd,
                 ": cu_seqlens must be 1-D [N + 1] with N >= 1, got shape ", str(cu.sym_sizes()));
    LA_CHECK_SYM(d.B.sym_eq(1), kFwd, ": with cu_seqlens the batch must be packed into B = 1, got B = ",
                 str(d.B));
    d.N = cu.sym_size(0) - 1;
    if (cu.is_cpu()) check_cu_seqlens_values(cu, d.T.expect_int());
  }
  if (initial_state.has_value()) check_state(*initial_state, kFwd, "initial_state", "N", d.N, d, q);
  return d;
}

AttnDims check_fwd_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                          const std::optional<at::Tensor>& slope,
                          const std::optional<at::Tensor>& initial_state,
                          const std::optional<at::Tensor>& cu_seqlens, bool head_first) {
  return concrete(check_fwd_inputs_sym(q, k, v, slope, initial_state, cu_seqlens, head_first));
}

SymAttnDims check_fwd_checkpoints_inputs_sym(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                             const std::optional<at::Tensor>& slope,
                                             const std::optional<at::Tensor>& initial_state,
                                             const std::optional<at::Tensor>& cu_seqlens, bool head_first,
                                             int64_t checkpoint_every, const SymInt& num_checkpoints) {
  const SymAttnDims d = check_fwd_inputs_sym(q, k, v, slope, initial_state, cu_seqlens, head_first);
  TORCH_CHECK_VALUE(checkpoint_every >= 1 && checkpoint_every % kCheckpointGranule == 0, kFwd,
                    ": checkpoint_every must be a positive multiple of ", std::to_string(kCheckpointGranule),
                    ", got ", std::to_string(checkpoint_every), " (lightning_attn_prefill takes any N >= 1)");
  LA_CHECK_SYM(num_checkpoints.sym_ge(0), kFwd, ": num_checkpoints must be >= 0, got ", str(num_checkpoints));
  return d;
}

AttnDims check_fwd_checkpoints_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                      const std::optional<at::Tensor>& slope,
                                      const std::optional<at::Tensor>& initial_state,
                                      const std::optional<at::Tensor>& cu_seqlens, bool head_first,
                                      int64_t checkpoint_every, int64_t num_checkpoints) {
  return concrete(check_fwd_checkpoints_inputs_sym(q, k, v, slope, initial_state, cu_seqlens, head_first,
                                                   checkpoint_every, SymInt(num_checkpoints)));
}

namespace {

// slot_ids: int32 [rows] on q's device.
void check_slot_ids(const at::Tensor& s, const char* op, const SymInt& rows, const char* rows_name,
                    const at::Tensor& q) {
  check_same_device(s, op, "slot_ids", q, "q");
  LA_CHECK_SYM(shape_is(s.sym_sizes(), {rows}), op, ": slot_ids must have shape [", rows_name, "] = [", str(rows),
               "], got ", str(s.sym_sizes()));
  TORCH_CHECK_VALUE(s.scalar_type() == at::kInt, op, ": slot_ids must be int32, got ", s.scalar_type());
}

}  // namespace

SymAttnDims check_fwd_slots_inputs_sym(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                       const std::optional<at::Tensor>& slope, const at::Tensor& state,
                                       const at::Tensor& slot_ids, const std::optional<at::Tensor>& cu_seqlens,
                                       bool head_first) {
  const SymAttnDims d = check_fwd_inputs_sym(q, k, v, slope, std::nullopt, cu_seqlens, head_first);
  TORCH_CHECK_VALUE(state.dim() == 4, kFwd, ": with slot_ids, initial_state must be a state pool ",
                    "[num_slots, H, Dk, Dv], got shape ", str(state.sym_sizes()));
  LA_CHECK_SYM(state.sym_size(0).sym_ge(1), kFwd, ": the state pool must have num_slots >= 1, got shape ",
               str(state.sym_sizes()));
  check_state(state, kFwd, "initial_state (the state pool)", "num_slots", state.sym_size(0), d, q);
  check_slot_ids(slot_ids, kFwd, d.N, "N", q);
  return d;
}

AttnDims check_fwd_slots_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const std::optional<at::Tensor>& slope, const at::Tensor& state,
                                const at::Tensor& slot_ids, const std::optional<at::Tensor>& cu_seqlens,
                                bool head_first) {
  return concrete(check_fwd_slots_inputs_sym(q, k, v, slope, state, slot_ids, cu_seqlens, head_first));
}

void check_bwd_inputs(const at::Tensor& dout_in, const at::Tensor& v_in, const SymAttnDims& d,
                      const std::optional<at::Tensor>& d_final_state, bool head_first) {
  LA_CHECK_SYM(shape_is(dout_in.sym_sizes(), v_in.sym_sizes()), kFwd, ": do must have v's shape ",
               str(v_in.sym_sizes()), ", got ", str(dout_in.sym_sizes()));
  TORCH_CHECK_VALUE(dout_in.scalar_type() == v_in.scalar_type(), kFwd, ": do must have q's dtype (",
                    v_in.scalar_type(), "), got ", dout_in.scalar_type());
  check_same_device(dout_in, kFwd, "do", v_in, "v");
  check_last_dim_contiguous(canonical(dout_in, head_first), kFwd, "do");
  if (d_final_state.has_value()) check_state(*d_final_state, kFwd, "d_final_state", "N", d.N, d, v_in);
}

void check_bwd_inputs(const at::Tensor& dout, const at::Tensor& v, const AttnDims& d,
                      const std::optional<at::Tensor>& d_final_state, bool head_first) {
  const SymAttnDims s{d.B, d.T, d.H, d.Dk, d.Dv, d.N, d.varlen, d.state_dtype};
  check_bwd_inputs(dout, v, s, d_final_state, head_first);
}

void check_decode_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const at::Tensor& state, const std::optional<at::Tensor>& slope) {
  for (auto [x, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}}) {
    TORCH_CHECK_VALUE(x->dim() == 3, kDecode, ": ", name, " must be a 3-D tensor [B, H, D], got shape ",
                      str(x->sym_sizes()));
    check_same_device(*x, kDecode, name, q, "q");
    TORCH_CHECK_VALUE(x->scalar_type() == q.scalar_type(), kDecode, ": ", name, " must have q's dtype (",
                      q.scalar_type(), "), got ", x->scalar_type());
    check_last_dim_contiguous(*x, kDecode, name);
  }
  check_float_dtype(q, kDecode, "q");
  // N = B: one state per sequence of the batch.
  const SymAttnDims d{q.sym_size(0), 1, q.sym_size(1), q.sym_size(2), v.sym_size(2),
                      q.sym_size(0), false, acc_dtype(q)};
  LA_CHECK_SYM(shape_is(k.sym_sizes(), q.sym_sizes()), kDecode, ": k must have q's shape ", str(q.sym_sizes()),
               ", got ", str(k.sym_sizes()));
  LA_CHECK_SYM(d.B.sym_eq(v.sym_size(0)) & d.H.sym_eq(v.sym_size(1)), kDecode,
               ": v must be [B, H, Dv] with q's B and H, got ", str(v.sym_sizes()));
  check_head_dims(d.Dk, d.Dv, kDecode);
  check_state(state, kDecode, "state", "B", d.B, d, q);
  LA_CHECK_SYM(state.sym_is_contiguous(), kDecode, ": state must be contiguous (it is updated in place)");
  check_slope(slope, kDecode, d.H, d.state_dtype, q);
}

void check_decode_tokens_inputs(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const at::Tensor& state, const std::optional<at::Tensor>& slope,
                                const std::optional<at::Tensor>& slot_ids,
                                const std::optional<at::Tensor>& num_accepted, bool output_states) {
  const char* op = kDecodeTokens;
  for (auto [x, name] : {std::pair{&q, "q"}, {&k, "k"}, {&v, "v"}}) {
    TORCH_CHECK_VALUE(x->dim() == 4, op, ": ", name, " must be a 4-D tensor [B, K, H, D], got shape ",
                      str(x->sym_sizes()));
    check_same_device(*x, op, name, q, "q");
    TORCH_CHECK_VALUE(x->scalar_type() == q.scalar_type(), op, ": ", name, " must have q's dtype (",
                      q.scalar_type(), "), got ", x->scalar_type());
    check_last_dim_contiguous(*x, op, name);
  }
  check_float_dtype(q, op, "q");
  const SymInt& B = q.sym_size(0);
  const SymInt& K = q.sym_size(1);
  LA_CHECK_SYM(in_range(K, 1, kMaxDecodeTokens), op, ": q must have K (dim 1, tokens per sequence) in [1, ",
               std::to_string(kMaxDecodeTokens), "], got ", str(K));
  LA_CHECK_SYM(shape_is(k.sym_sizes(), q.sym_sizes()), op, ": k must have q's shape ", str(q.sym_sizes()),
               ", got ", str(k.sym_sizes()));
  LA_CHECK_SYM(B.sym_eq(v.sym_size(0)) & K.sym_eq(v.sym_size(1)) & q.sym_size(2).sym_eq(v.sym_size(2)), op,
               ": v must be [B, K, H, Dv] with q's B, K and H, got ", str(v.sym_sizes()));
  const SymInt rows = slot_ids.has_value() && state.dim() == 4 ? state.sym_size(0) : B;
  const SymAttnDims d{B, 1, q.sym_size(2), q.sym_size(3), v.sym_size(3), rows, false, acc_dtype(q)};
  check_head_dims(d.Dk, d.Dv, op);
  check_state(state, op, "state", slot_ids.has_value() ? "num_slots" : "B", rows, d, q);
  LA_CHECK_SYM(state.sym_is_contiguous(), op, ": state must be contiguous (it is updated in place)");
  if (slot_ids.has_value()) check_slot_ids(*slot_ids, op, B, "B", q);
  if (num_accepted.has_value()) {
    const at::Tensor& a = *num_accepted;
    TORCH_CHECK_VALUE(!output_states, op,
                      ": give num_accepted (advance the state) or output_states (return every state), not both");
    check_same_device(a, op, "num_accepted", q, "q");
    LA_CHECK_SYM(shape_is(a.sym_sizes(), {B}), op, ": num_accepted must have shape [B] = [", str(B),
                 "], got ", str(a.sym_sizes()));
    TORCH_CHECK_VALUE(a.scalar_type() == at::kInt || a.scalar_type() == at::kLong, op,
                      ": num_accepted must be int32 or int64, got ", a.scalar_type());
  }
  check_slope(slope, op, d.H, d.state_dtype, q);
}

void check_srms_norm_input(const at::Tensor& x, double eps) {
  check_srms_norm_x(x);
  TORCH_CHECK_VALUE(eps >= 0, kSrms, ": eps must be >= 0, got ", std::to_string(eps));
}

void check_srms_norm_bwd_inputs(const at::Tensor& dy, const at::Tensor& x, const at::Tensor& rstd) {
  check_srms_norm_x(x);
  LA_CHECK_SYM(shape_is(dy.sym_sizes(), x.sym_sizes()), kSrms, ": dy must have x's shape ", str(x.sym_sizes()),
               ", got ", str(dy.sym_sizes()));
  TORCH_CHECK_VALUE(dy.scalar_type() == x.scalar_type(), kSrms, ": dy must have x's dtype (",
                    x.scalar_type(), "), got ", dy.scalar_type());
  const SymIntArrayRef rows = x.sym_sizes().slice(0, x.dim() - 1);
  LA_CHECK_SYM(shape_is(rstd.sym_sizes(), rows), kSrms, ": rstd must have shape x.shape[:-1] = ", str(rows),
               ", got ", str(rstd.sym_sizes()));
  TORCH_CHECK_VALUE(rstd.scalar_type() == acc_dtype(x), kSrms, ": rstd must be ", acc_dtype(x),
                    " (as srms_norm_fwd returns it), got ", rstd.scalar_type());
  check_same_device(dy, kSrms, "dy", x, "x");
  check_same_device(rstd, kSrms, "rstd", x, "x");
}

void check_slope_values(const at::Tensor& slope) {
  TORCH_CHECK_VALUE(!(slope < 0).any().item<bool>() && !slope.isnan().any().item<bool>(), kFwd,
                    ": slope must be >= 0 (decay lambda = exp(-slope) <= 1), got ", slope);
}

void check_cu_seqlens_values(const at::Tensor& cu, int64_t T) {
  const at::Tensor c = cu.to(at::kLong);
  TORCH_CHECK_VALUE(c[0].item<int64_t>() == 0, kFwd, ": cu_seqlens must start at 0, got ",
                    std::to_string(c[0].item<int64_t>()));
  TORCH_CHECK_VALUE(c[-1].item<int64_t>() == T, kFwd, ": cu_seqlens must end at the packed length T = ",
                    std::to_string(T), ", got ", std::to_string(c[-1].item<int64_t>()));
  TORCH_CHECK_VALUE(!(c.diff() < 0).any().item<bool>(), kFwd, ": cu_seqlens must be non-decreasing, got ",
                    c);
}

namespace {

// "[4, -1, 4]" (the first 32 ids) for messages.
std::string ids_str(const at::Tensor& ids) {
  const at::Tensor s = ids.to(at::kLong).contiguous();
  const int64_t* p = s.data_ptr<int64_t>();
  std::string out = "[";
  for (int64_t i = 0; i < s.numel() && i < 32; ++i) out += (i ? ", " : "") + std::to_string(p[i]);
  return out + (s.numel() > 32 ? ", ...]" : "]");
}

}  // namespace

void check_slot_ids_values(const at::Tensor& slot_ids, int64_t num_slots, const char* op) {
  if (slot_ids.numel() == 0) return;
  const at::Tensor s = slot_ids.to(at::kLong);
  TORCH_CHECK_VALUE(s.min().item<int64_t>() >= -1 && s.max().item<int64_t>() < num_slots, op,
                    ": slot_ids must be in [-1, num_slots = ", std::to_string(num_slots), "), got ", ids_str(s));
  const at::Tensor used = s.masked_select(s >= 0);
  TORCH_CHECK_VALUE(std::get<0>(at::_unique(used)).numel() == used.numel(), op,
                    ": slot_ids must be distinct (each slot holds one sequence's state), got ", ids_str(s));
}

void check_decode_tokens_values(const std::optional<at::Tensor>& slot_ids, int64_t num_slots,
                                const std::optional<at::Tensor>& num_accepted, int64_t K) {
  if (slot_ids.has_value()) check_slot_ids_values(*slot_ids, num_slots, kDecodeTokens);
  if (num_accepted.has_value() && num_accepted->numel() > 0) {
    const at::Tensor a = num_accepted->to(at::kLong);
    TORCH_CHECK_VALUE(a.min().item<int64_t>() >= 0 && a.max().item<int64_t>() <= K, kDecodeTokens,
                      ": num_accepted must be in [0, K = ", std::to_string(K), "], got ", a);
  }
}

}  // namespace lightning_attn
