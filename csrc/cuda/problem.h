// The CUDA ops as generic problems: every forward and backward pass is one chunk problem
// (params.h) or the fused dk/dv sweep, each run with its own kernel choice and split.
#pragma once

#include <ATen/ATen.h>

#include "context.h"

namespace lightning_attn {
namespace cuda {

// One generic chunk problem, in canonical [B, T, H, D] views.
struct Problem {
  at::Tensor q, k, v, o;  // generic roles
  float scale_intra = 1.f, scale_state = 1.f, scale_upd = 1.f;
  int qoff = 0, koff = 0;
  bool reverse = false;
  at::Tensor init;         // incoming state [N, H, Dk, Dv] fp32 (maybe a transposed view), or undefined
  at::Tensor final_state;  // final state out, same rules, or undefined
  at::Tensor state_rows;   // int32 [N] or undefined: init and final_state are pools, read and
                           // written at these rows (the same tensor for both: in place)
  bool accumulate = false;  // o += this problem's output
  at::Tensor checkpoints;   // fp32 [N, J, H, Dk, Dv] or undefined: the state after every
  int64_t checkpoint_every = 0;  // checkpoint_every tokens (a multiple of kChunk), j < J
};

void run_problem(const Problem& pb, const CallContext& c, cudaStream_t stream);

// dk and dv of the backward by the fused reversed sweep (Dk, Dv <= 128, or 128-wide pieces of
// 256 where hopper_pieces holds). ds_init: d_final_state or undefined; d_initial: written
// where defined.
void run_dkdv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
              const at::Tensor& dk, const at::Tensor& dv, float scale, const at::Tensor& ds_init,
              const at::Tensor& d_initial, const CallContext& c, cudaStream_t stream);

// Whether the backward's dk, dv come from run_dkdv (else two reversed generic problems).
bool fused_dkdv(at::ScalarType dtype, int64_t Dk, int64_t Dv, const CallContext& c);

}  // namespace cuda
}  // namespace lightning_attn
