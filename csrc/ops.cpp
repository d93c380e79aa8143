// The operator schemas: every op of the library is declared here, once.
// Backends (csrc/cpu, csrc/cuda, and csrc/meta for fake tensors and torch.compile) only
// add TORCH_LIBRARY_IMPL blocks; autograd lives in lightning_attn/ops.py.
#include <torch/library.h>

TORCH_LIBRARY(lightning_attn, m) {
  // Chunked forward. q, k: [B, T, H, Dk], v: [B, T, H, Dv] (or [B, H, T, D] with
  // head_first). Returns o (q's dtype and layout) and the float32 final state
  // [N, H, Dk, Dv] (an empty tensor unless output_final_state).
  m.def(
      "fwd(Tensor q, Tensor k, Tensor v, Tensor? slope, float scale, "
      "Tensor? initial_state, Tensor? cu_seqlens, bool head_first, "
      "bool output_final_state) -> (Tensor o, Tensor final_state)");
  // fwd for a serving engine's prefill: sequence n starts from row slot_ids[n] (int32 [N]) of
  // the state pool [num_slots, H, Dk, Dv] and its final state is written back into that row, in
  // place (no gather or scatter). A row of -1 (on CUDA, any id outside [0, num_slots)) starts
  // from zeros and leaves the pool untouched. No autograd: an inference op.
  m.def(
      "fwd_slots(Tensor q, Tensor k, Tensor v, Tensor? slope, float scale, Tensor(a!) state, "
      "Tensor slot_ids, Tensor? cu_seqlens, bool head_first) -> Tensor o");
  // fwd that also keeps each sequence's state every checkpoint_every tokens (a multiple of 64),
  // for prefix caching: checkpoints [N, num_checkpoints, H, Dk, Dv] float32, entry j the state
  // after min((j + 1) checkpoint_every, len) tokens of sequence n (past its end: its final
  // state; beyond num_checkpoints: not kept). Written by the forward's own sweep, one pass over
  // q, k, v. No autograd (lightning_attn_prefill composes fwd calls when gradients are needed).
  m.def(
      "fwd_checkpoints(Tensor q, Tensor k, Tensor v, Tensor? slope, float scale, Tensor? initial_state, "
      "Tensor? cu_seqlens, bool head_first, int checkpoint_every, SymInt num_checkpoints) "
      "-> (Tensor o, Tensor final_state, Tensor checkpoints)");
  // Backward of fwd. d_final_state is the gradient flowing into the final state
  // (None when it was not used). d_initial_state is empty without initial_state.
  m.def(
      "bwd(Tensor do, Tensor q, Tensor k, Tensor v, Tensor? slope, float scale, "
      "Tensor? initial_state, Tensor? d_final_state, Tensor? cu_seqlens, "
      "bool head_first) -> (Tensor dq, Tensor dk, Tensor dv, Tensor d_initial_state)");
  // One decoding step for a batch of sequences: state <- lambda * state + k v^T
  // (in place), o = scale * state^T q. q, k: [B, H, Dk], v: [B, H, Dv].
  m.def(
      "decode(Tensor q, Tensor k, Tensor v, Tensor(a!) state, Tensor? slope, "
      "float scale) -> Tensor o");
  // K tokens per sequence in one call (multi-token decode, speculative verify), from each
  // sequence's state [B, H, Dk, Dv] or from the rows slot_ids (int32 [B]; -1 skips the sequence:
  // zero outputs, pool untouched) of a state pool [num_slots, H, Dk, Dv]. q, k: [B, K, H, Dk],
  // v: [B, K, H, Dv]; o: [B, K, H, Dv]. The state advances in place by num_accepted[b] tokens when
  // given, else by all K, except with output_states: then it is only read and states
  // [B, K, H, Dk, Dv] (float32) holds the state after each token (else an empty tensor).
  m.def(
      "decode_tokens(Tensor q, Tensor k, Tensor v, Tensor(a!) state, Tensor? slope, float scale, "
      "Tensor? slot_ids, Tensor? num_accepted, bool output_states) -> (Tensor o, Tensor states)");
  // SRMSNorm: y = x * rsqrt(mean(x^2, -1) + eps); rstd is float32 [x.shape[:-1]].
  m.def("srms_norm_fwd(Tensor x, float eps) -> (Tensor y, Tensor rstd)");
  m.def("srms_norm_bwd(Tensor dy, Tensor x, Tensor rstd) -> Tensor dx");
}
