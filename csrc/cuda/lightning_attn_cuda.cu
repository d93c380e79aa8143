// CUDA host code of lightning attention: checks (shared with the CPU backend),
// device guard, current stream, params structs, dispatch, and the sequence split.
//
// Every op is one generic chunk problem or several (chunk_params.h). When the
// (sequence, head, v-tile) blocks cannot fill the GPU, each sequence is cut into
// segments: pass 1 computes each segment's local state (STATE_ONLY blocks), a scan
// combines them with lambda^segment_length, pass 2 computes the outputs from each
// segment's incoming state. No host synchronisation; workspaces come from the
// caching allocator on the current stream, so the ops capture in CUDA graphs. Where
// the shapes allow, the segment states live in the rows of the output that pass 2
// then overwrites (see StateView), so the split needs no memory beyond the outputs.
#include <cstdlib>
#include <tuple>
#include <utility>

#include <ATen/ATen.h>
#include <torch/library.h>

#include "../checks.h"
#include "chunk_params.h"
#include "mma_utils.cuh"
#include "torch_cuda_headers.h"

namespace lightning_attn {
namespace {

using at::Tensor;
using cuda::ChunkParams;

void check_cuda_dtype(const Tensor& x, const char* op) {
  TORCH_CHECK_VALUE(x.scalar_type() != at::kDouble, "lightning_attn", op,
                    ": float64 is supported on the CPU only; use float32, float16 or bfloat16 on CUDA");
}

int64_t elem_align(const void* ptr, size_t elem) {
  return int64_t(reinterpret_cast<uintptr_t>(ptr) % 16 == 0 ? 16 / elem : 1);
}

// A canonical [B, T, H, D] operand: 16-byte loads are legal when the base is
// 16-byte aligned and every stride is a multiple of 16 bytes.
bool vec16_ok(const Tensor& x) {
  const int64_t a = int64_t(16 / x.element_size());
  return x.numel() == 0 ||
         (elem_align(x.data_ptr(), x.element_size()) == a && x.stride(0) % a == 0 &&
          x.stride(1) % a == 0 && x.stride(2) % a == 0);
}

bool vec2_ok(const Tensor& x) {
  const size_t bytes = 2 * x.element_size();
  return reinterpret_cast<uintptr_t>(x.data_ptr()) % bytes == 0 && x.stride(0) % 2 == 0 &&
         x.stride(1) % 2 == 0 && x.stride(2) % 2 == 0;
}

// One generic chunk problem (see chunk_params.h), in canonical [B, T, H, D] views.
struct Problem {
  Tensor q, k, v, o;  // generic roles
  float scale_intra, scale_state, scale_upd;
  int qoff, koff;
  bool reverse;
  // incoming state [N, H, Dk, Dv] in generic orientation (maybe a transposed view), or undefined
  Tensor init;
  // final state out, same orientation rules, or undefined
  Tensor final_state;
  bool accumulate = false;  // o += this problem's output
};

struct Common {
  int64_t B, T, H, N;
  const int32_t* cu32 = nullptr;
  const int64_t* cu64 = nullptr;
  const float* slope = nullptr;
  int num_sms = 132;
  bool sm90 = false;  // the device is sm_90 (H100/H200)
};

// How a call splits its sequences (see run_problem_typed).
struct SplitPlan {
  int64_t nseg = 1, seg_len = 0;  // segments of pass 2 and their length in tokens
  int64_t F = 1;                  // pass-1 sub-segments per segment
};

// LIGHTNING_ATTN_SPLIT=0 turns the sequence split off (A/B switch, see env_is).
bool split_enabled() { return !cuda::env_is("LIGHTNING_ATTN_SPLIT", '0'); }

// LIGHTNING_ATTN_SPLIT_F=n fixes the pass-1 sub-segments per segment (for A/B runs); 0: the plan's.
int64_t split_f_override() {
  const char* env = std::getenv("LIGHTNING_ATTN_SPLIT_F");
  return env == nullptr ? 0 : std::atoll(env);
}

// Split each sequence into nseg segments when the plain grid (base_blocks) would leave
// SMs idle. The split costs a second read of k and v (pass 1), so it is used only below
// one full wave. Pass 1 (local states) runs on F-times finer sub-segments: its blocks
// are light (K^T V only) and need several per SM to keep enough loads in flight, but
// all of them must fit in one wave (a second, partial wave cost up to 40% of pass 1:
// KERNEL_NOTES.md, v7e). all_segments: pass 1 covers the last segment too (final state).
SplitPlan plan_split(const Common& c, int64_t base_blocks, int blocks_per_sm, int state_blocks_per_sm,
                     bool all_segments) {
  SplitPlan s;
  const int64_t capacity = int64_t(c.num_sms) * blocks_per_sm;
  const int64_t chunks = (c.T + cuda::kChunk - 1) / cuda::kChunk;
  const bool split = base_blocks > 0 && base_blocks < capacity && split_enabled();
  int64_t nseg = split ? std::min<int64_t>(capacity / base_blocks, chunks) : 1;
  nseg = std::max<int64_t>(1, std::min<int64_t>(nseg, 65535));
  int64_t seg_chunks = (chunks + nseg - 1) / nseg;
  if (nseg > 1) {
    const int64_t capacity1 = int64_t(c.num_sms) * state_blocks_per_sm;
    const int64_t f = split_f_override(), pass1_segs = all_segments ? nseg : nseg - 1;
    const int64_t one_wave = capacity1 / (base_blocks * pass1_segs);
    s.F = std::max<int64_t>(1, std::min<int64_t>({seg_chunks, f > 0 ? f : one_wave, f > 0 ? f : 8}));
    seg_chunks = (seg_chunks + s.F - 1) / s.F * s.F;
  }
  s.nseg = (chunks + seg_chunks - 1) / seg_chunks;  // no trailing empty segments
  s.seg_len = seg_chunks * cuda::kChunk;
  if (s.nseg == 1) s.F = 1;
  return s;
}

// Where a split call keeps its segment states, [seg, n, h, Dk, Dv] in floats with strides
// (spx added once per 64 columns, as in ChunkParams::init). `holder` owns a workspace.
struct StateView {
  float* p = nullptr;
  int64_t sseg = 0, sn = 0, sh = 0, sk = 0, sv = 0, spx = 0;
  Tensor holder;
};

StateView workspace_states(int64_t nseg, const Common& c, int64_t Dk, int64_t Dv) {
  const auto fopts = at::TensorOptions().device(at::kCUDA, c10::cuda::current_device()).dtype(at::kFloat);
  StateView w;
  w.holder = at::empty({nseg, c.N, c.H, Dk, Dv}, fopts);
  w.p = w.holder.data_ptr<float>();
  w.sseg = w.holder.stride(0), w.sn = w.holder.stride(1), w.sh = w.holder.stride(2);
  w.sk = w.holder.stride(3), w.sv = w.holder.stride(4);
  return w;
}

// LIGHTNING_ATTN_SPLIT_WS=1 keeps segment states in a workspace even where the output's
// rows could hold them (for A/B runs and the test that compares both).
bool rows_enabled() { return !cuda::env_is("LIGHTNING_ATTN_SPLIT_WS", '1'); }

// Segment states in the rows of `out` ([B, T, H, 128], 16-bit), the output pass 2 writes:
// a 128 x 128 fp32 state is two 64-column panels of 128 rows, each 256-byte state row
// one output row. Sub-segment j keeps its local state in its first 256 rows (in the
// problem's time direction), and the state entering segment s sits in the next 256 rows
// of the segment's first sub-segment. Pass 1 and the scan run before pass 2 (stream
// order); each pass-2 block reads the rows of its own segment into registers before its
// first block-wide barrier and writes them only from its fifth chunk on. Requires whole
// sequences (no cu_seqlens) and sub-segments of at least 512 tokens.
bool rows_hold_states(const Tensor& out, const ChunkParams& p, const SplitPlan& plan, int64_t sub_len,
                      int64_t nsub, bool final_state, const Common& c) {
  if (!out.defined() || !rows_enabled() || c.cu32 || c.cu64 || p.o_accumulate) return false;
  if (out.scalar_type() != at::kHalf && out.scalar_type() != at::kBFloat16) return false;
  if (out.size(3) != 128 || p.Dk != 128 || p.Dv != 128 || out.stride(3) != 1) return false;
  if (reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 || out.stride(0) % 2 || out.stride(1) % 2 ||
      out.stride(2) % 2)
    return false;
  const int64_t last_seg = c.T - (plan.nseg - 1) * plan.seg_len, last_sub = c.T - (nsub - 1) * sub_len;
  return sub_len >= 512 && last_seg >= 512 && (!final_state || last_sub >= 256);
}

// {local states of the sub-segments, states entering the segments} in out's rows.
std::pair<StateView, StateView> row_states(const Tensor& out, bool reverse, const SplitPlan& plan,
                                           int64_t sub_len, const Common& c) {
  float* base = static_cast<float*>(out.data_ptr());
  const int64_t rs = out.stride(1) / 2;  // floats between output rows
  const int64_t dir = reverse ? -1 : 1;  // reversed time starts at row T - 1 and goes up
  StateView loc;
  loc.p = base + (reverse ? (c.T - 1) * rs : 0);
  loc.sseg = dir * sub_len * rs, loc.sn = out.stride(0) / 2, loc.sh = out.stride(2) / 2;
  loc.sk = dir * rs, loc.sv = 1, loc.spx = dir * 128 * rs - 64;
  StateView in = loc;
  in.p = loc.p + dir * 256 * rs;
  in.sseg = dir * plan.seg_len * rs;
  return {loc, in};
}

// Pass 1 and the scan of a split call: local states of the sub-segments of the state
// problem p (its k, v, scales and direction), then the state entering each segment
// (returned) and the final state (written to final_state if defined). Without a final
// state the last segment's sub-segments are skipped: no later segment needs them (saves
// 1/nseg of pass 1, half of it at nseg = 2). `out`: pass 2's output, whose rows hold the
// states where rows_hold_states allows (else, or undefined, a workspace).
template <int DK, int VT, typename TIn>
StateView segment_states(const ChunkParams& p, const SplitPlan& plan, const Tensor& init,
                         const Tensor& final_state, const Tensor& out, const Common& c, cudaStream_t stream) {
  const int64_t sub_len = plan.seg_len / plan.F;
  const int64_t nsub = (c.T + sub_len - 1) / sub_len;
  const int64_t nlocal = final_state.defined() ? nsub : (plan.nseg - 1) * plan.F;
  StateView local, s_in;
  if (rows_hold_states(out, p, plan, sub_len, nsub, final_state.defined(), c)) {
    std::tie(local, s_in) = row_states(out, p.reverse, plan, sub_len, c);
  } else {
    local = workspace_states(nlocal, c, p.Dk, p.Dv);
    s_in = workspace_states(plan.nseg, c, p.Dk, p.Dv);
  }
  ChunkParams p1 = p;
  p1.q = nullptr;
  p1.o = nullptr;
  p1.o_accumulate = false;
  p1.init = nullptr;
  p1.seg_len = sub_len;
  p1.nseg = int(nlocal);
  p1.out_state = local.p;
  p1.out_sseg = local.sseg, p1.out_sn = local.sn, p1.out_sh = local.sh, p1.out_sk = local.sk,
  p1.out_sv = local.sv, p1.out_spx = local.spx;
  cuda::launch_chunk<DK, VT, TIn>(p1, /*state_only=*/true, stream);

  cuda::ScanParams s{};
  s.local = local.p;
  s.loc_sseg = local.sseg, s.loc_sn = local.sn, s.loc_sh = local.sh, s.loc_sk = local.sk,
  s.loc_sv = local.sv, s.loc_spx = local.spx;
  s.s_in = s_in.p;
  s.in_sseg = s_in.sseg, s.in_sn = s_in.sn, s.in_sh = s_in.sh, s.in_sk = s_in.sk, s.in_sv = s_in.sv,
  s.in_spx = s_in.spx;
  if (init.defined()) {
    s.init = init.data_ptr<float>();
    s.init_sn = init.stride(0), s.init_sh = init.stride(1), s.init_sk = init.stride(2),
    s.init_sv = init.stride(3);
  }
  if (final_state.defined()) {
    s.final_state = final_state.data_ptr<float>();
    s.fin_sn = final_state.stride(0), s.fin_sh = final_state.stride(1),
    s.fin_sk = final_state.stride(2), s.fin_sv = final_state.stride(3);
  }
  s.Dk = p.Dk, s.Dv = p.Dv, s.H = p.H, s.N = p.N, s.T = p.T, s.seg_len = sub_len, s.nseg = int(nsub);
  s.F = int(plan.F), s.nlocal = int(nlocal);
  s.cu32 = c.cu32, s.cu64 = c.cu64, s.slope = c.slope;
  cuda::launch_scan(s, stream);
  return s_in;
}

// Points a pass-2 call's incoming states at the scan's output.
template <typename Params>
void set_init(Params& p, const StateView& s) {
  p.init = s.p;
  p.init_sseg = s.sseg, p.init_sn = s.sn, p.init_sh = s.sh, p.init_sk = s.sk, p.init_sv = s.sv;
  p.init_spx = s.spx;
}

template <int DK, int VT, typename TIn>
void run_problem_typed(const Problem& pb, const Common& c, cudaStream_t stream) {
  ChunkParams p{};
  p.q = pb.q.data_ptr();
  p.k = pb.k.data_ptr();
  p.v = pb.v.data_ptr();
  p.o = pb.o.data_ptr();
  p.q_sb = pb.q.stride(0), p.q_st = pb.q.stride(1), p.q_sh = pb.q.stride(2);
  p.k_sb = pb.k.stride(0), p.k_st = pb.k.stride(1), p.k_sh = pb.k.stride(2);
  p.v_sb = pb.v.stride(0), p.v_st = pb.v.stride(1), p.v_sh = pb.v.stride(2);
  p.o_sb = pb.o.stride(0), p.o_st = pb.o.stride(1), p.o_sh = pb.o.stride(2);
  p.q_vec = vec16_ok(pb.q), p.k_vec = vec16_ok(pb.k), p.v_vec = vec16_ok(pb.v);
  p.o_vec2 = vec2_ok(pb.o), p.o_vec = vec16_ok(pb.o);
  p.Dk = int(pb.q.size(3));
  p.Dv = int(pb.v.size(3));
  p.H = int(c.H), p.N = int(c.N), p.T = c.T;
  p.cu32 = c.cu32, p.cu64 = c.cu64, p.slope = c.slope;
  p.scale_intra = pb.scale_intra, p.scale_state = pb.scale_state, p.scale_upd = pb.scale_upd;
  p.qoff = pb.qoff, p.koff = pb.koff, p.reverse = pb.reverse;

  if (pb.accumulate) {
    p.o_accumulate = cuda::chunk_takes_accumulate<DK, VT, TIn>(p);
    if (!p.o_accumulate) {  // no kernel here adds into o: a temporary and an add
      Problem tmp = pb;
      tmp.accumulate = false;
      tmp.o = at::empty_like(pb.o);
      run_problem_typed<DK, VT, TIn>(tmp, c, stream);
      pb.o.add_(tmp.o);
      return;
    }
  }
  const int64_t nvt = (p.Dv + VT - 1) / VT;
  const SplitPlan plan = plan_split(c, c.N * c.H * nvt, cuda::chunk_blocks_per_sm<DK, VT, TIn>(false),
                                    cuda::chunk_blocks_per_sm<DK, VT, TIn>(true), pb.final_state.defined());
  p.seg_len = plan.seg_len;
  p.nseg = int(plan.nseg);
  if (plan.nseg == 1) {
    if (pb.init.defined()) {
      const Tensor& s = pb.init;
      p.init = s.data_ptr<float>();
      p.init_sseg = 0, p.init_sn = s.stride(0), p.init_sh = s.stride(1), p.init_sk = s.stride(2),
      p.init_sv = s.stride(3);
    }
    if (pb.final_state.defined()) {
      const Tensor& f = pb.final_state;
      p.out_state = f.data_ptr<float>();
      p.out_sseg = 0, p.out_sn = f.stride(0), p.out_sh = f.stride(1), p.out_sk = f.stride(2),
      p.out_sv = f.stride(3);
    }
    cuda::launch_chunk<DK, VT, TIn>(p, /*state_only=*/false, stream);
    return;
  }
  const StateView s_in = segment_states<DK, VT, TIn>(p, plan, pb.init, pb.final_state, pb.o, c, stream);
  // Pass 2: outputs from each segment's incoming state.
  set_init(p, s_in);
  p.out_state = nullptr;
  cuda::launch_chunk<DK, VT, TIn>(p, /*state_only=*/false, stream);
}

template <typename TIn>
void run_problem_typed_dk(const Problem& pb, const Common& c, cudaStream_t stream) {
  const bool v64 = pb.v.size(3) <= 64;
  switch (cuda::padded_dk(pb.q.size(3))) {
    case 64:
      return v64 ? run_problem_typed<64, 64, TIn>(pb, c, stream) : run_problem_typed<64, 128, TIn>(pb, c, stream);
    case 128:
      return v64 ? run_problem_typed<128, 64, TIn>(pb, c, stream) : run_problem_typed<128, 128, TIn>(pb, c, stream);
    default: return run_problem_typed<256, 64, TIn>(pb, c, stream);
  }
}

// Head dims of 256 on sm_90 run as 128-wide pieces through the Hopper kernels (Dk = Dv =
// 128 only) instead of the portable 256-wide kernel (measured in KERNEL_NOTES.md, v7):
// columns of v are independent (each piece writes its columns of o and of the state),
// and the k dimension is a sum, o = o(q1, k1, v) + o(q2, k2, v) with the state's rows
// split the same way, so a second k piece adds its output into o (in the kernel, which
// loads the old rows with the chunk; where it does not take the call, or with
// LIGHTNING_ATTN_SM90_ACC=0, run_problem_typed's temporary and add).
bool hopper_pieces(const Tensor& x, int64_t Dk, int64_t Dv, const Common& c) {
  const auto dt = x.scalar_type();
  if (dt != at::kHalf && dt != at::kBFloat16) return false;
  if ((Dk != 128 && Dk != 256) || (Dv != 128 && Dv != 256) || (Dk == 128 && Dv == 128)) return false;
  return c.sm90 && cuda::sm90_enabled();
}

// [.., 128 rows from r, 128 columns from c] of a state, or undefined.
Tensor state_piece(const Tensor& s, int64_t r, int64_t c) {
  return s.defined() ? s.narrow(2, r, 128).narrow(3, c, 128) : Tensor();
}

void run_problem_dk(const Problem& pb, const Common& c, cudaStream_t stream);

void run_problem_pieces(const Problem& pb, const Common& c, cudaStream_t stream) {
  const int64_t Dk = pb.q.size(3), Dv = pb.v.size(3);
  for (int64_t kp = 0; kp < Dk; kp += 128)
    for (int64_t vp = 0; vp < Dv; vp += 128) {
      Problem sub = pb;
      sub.q = pb.q.narrow(3, kp, 128), sub.k = pb.k.narrow(3, kp, 128), sub.v = pb.v.narrow(3, vp, 128);
      sub.o = pb.o.narrow(3, vp, 128);
      sub.accumulate = kp > 0;
      sub.init = state_piece(pb.init, kp, vp);
      sub.final_state = state_piece(pb.final_state, kp, vp);
      run_problem_dk(sub, c, stream);
    }
}

void run_problem(const Problem& pb, const Common& c, cudaStream_t stream) {
  if (hopper_pieces(pb.q, pb.q.size(3), pb.v.size(3), c)) return run_problem_pieces(pb, c, stream);
  run_problem_dk(pb, c, stream);
}

void run_problem_dk(const Problem& pb, const Common& c, cudaStream_t stream) {
  switch (pb.q.scalar_type()) {
    case at::kFloat: return run_problem_typed_dk<float>(pb, c, stream);
    case at::kHalf: return run_problem_typed_dk<__half>(pb, c, stream);
    case at::kBFloat16: return run_problem_typed_dk<__nv_bfloat16>(pb, c, stream);
    default: TORCH_CHECK(false, "lightning_attn: unsupported dtype ", pb.q.scalar_type());
  }
}

// The fused dk/dv reversed sweep (bwd_dkdv_kernel.cuh) with its own split: pass 1 and
// the scan are the generic state problem (k, v) = (q, do), reversed, koff 1, scale_upd scale.
template <int DK, int DV, typename TIn>
void run_dkdv_typed(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                    const Tensor& dk, const Tensor& dv, float scale, const Tensor& ds_init,
                    const Tensor& d_initial, const Common& c, cudaStream_t stream, bool dv_accumulate) {
  ChunkParams ps{};
  ps.k = q.data_ptr(), ps.v = dout.data_ptr();
  ps.k_sb = q.stride(0), ps.k_st = q.stride(1), ps.k_sh = q.stride(2);
  ps.v_sb = dout.stride(0), ps.v_st = dout.stride(1), ps.v_sh = dout.stride(2);
  ps.k_vec = vec16_ok(q), ps.v_vec = vec16_ok(dout);
  ps.Dk = int(q.size(3)), ps.Dv = int(dout.size(3));
  ps.H = int(c.H), ps.N = int(c.N), ps.T = c.T;
  ps.cu32 = c.cu32, ps.cu64 = c.cu64, ps.slope = c.slope;
  ps.scale_upd = scale, ps.koff = 1, ps.reverse = true;

  cuda::DkDvParams p{};
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.dout = dout.data_ptr();
  p.dk = dk.data_ptr(), p.dv = dv.data_ptr();
  p.q_sb = q.stride(0), p.q_st = q.stride(1), p.q_sh = q.stride(2);
  p.k_sb = k.stride(0), p.k_st = k.stride(1), p.k_sh = k.stride(2);
  p.v_sb = v.stride(0), p.v_st = v.stride(1), p.v_sh = v.stride(2);
  p.do_sb = dout.stride(0), p.do_st = dout.stride(1), p.do_sh = dout.stride(2);
  p.dk_sb = dk.stride(0), p.dk_st = dk.stride(1), p.dk_sh = dk.stride(2);
  p.dv_sb = dv.stride(0), p.dv_st = dv.stride(1), p.dv_sh = dv.stride(2);
  p.q_vec = vec16_ok(q), p.k_vec = vec16_ok(k), p.v_vec = vec16_ok(v), p.do_vec = vec16_ok(dout);
  p.dk_vec2 = vec2_ok(dk), p.dv_vec2 = vec2_ok(dv);
  p.Dk = ps.Dk, p.Dv = ps.Dv, p.H = ps.H, p.N = ps.N, p.T = c.T;
  p.cu32 = c.cu32, p.cu64 = c.cu64, p.slope = c.slope, p.scale = scale;
  if (dv_accumulate) {
    p.dv_accumulate = cuda::dkdv_takes_accumulate<DK, DV, TIn>(p);
    if (!p.dv_accumulate) {  // no kernel here adds into dv: a temporary and an add
      const Tensor tmp = at::empty_like(dv);
      run_dkdv_typed<DK, DV, TIn>(q, k, v, dout, dk, tmp, scale, ds_init, d_initial, c, stream, false);
      dv.add_(tmp);
      return;
    }
  }

  const SplitPlan plan = plan_split(c, c.N * c.H, cuda::dkdv_blocks_per_sm<DK, DV, TIn>(),
                                    cuda::chunk_blocks_per_sm<DK, DV, TIn>(true), d_initial.defined());
  p.seg_len = ps.seg_len = plan.seg_len;
  p.nseg = ps.nseg = int(plan.nseg);
  StateView s_in;
  if (plan.nseg == 1) {
    if (ds_init.defined()) {
      p.init = ds_init.data_ptr<float>();
      p.init_sn = ds_init.stride(0), p.init_sh = ds_init.stride(1), p.init_sk = ds_init.stride(2),
      p.init_sv = ds_init.stride(3);
    }
    if (d_initial.defined()) {
      p.out_state = d_initial.data_ptr<float>();
      p.out_sn = d_initial.stride(0), p.out_sh = d_initial.stride(1), p.out_sk = d_initial.stride(2),
      p.out_sv = d_initial.stride(3);
    }
  } else {
    s_in = segment_states<DK, DV, TIn>(ps, plan, ds_init, d_initial, dk, c, stream);
    set_init(p, s_in);
  }
  cuda::launch_dkdv<DK, DV, TIn>(p, stream);
}

template <typename TIn>
void run_dkdv_dims(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout,
                   const Tensor& dk, const Tensor& dv, float scale, const Tensor& ds_init,
                   const Tensor& d_initial, const Common& c, cudaStream_t stream, bool acc) {
  const bool k64 = q.size(3) <= 64, v64 = dout.size(3) <= 64;
  if (k64 && v64)
    return run_dkdv_typed<64, 64, TIn>(q, k, v, dout, dk, dv, scale, ds_init, d_initial, c, stream, acc);
  if (k64) return run_dkdv_typed<64, 128, TIn>(q, k, v, dout, dk, dv, scale, ds_init, d_initial, c, stream, acc);
  if (v64) return run_dkdv_typed<128, 64, TIn>(q, k, v, dout, dk, dv, scale, ds_init, d_initial, c, stream, acc);
  return run_dkdv_typed<128, 128, TIn>(q, k, v, dout, dk, dv, scale, ds_init, d_initial, c, stream, acc);
}

void run_dkdv(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& dk,
              const Tensor& dv, float scale, const Tensor& ds_init, const Tensor& d_initial,
              const Common& c, cudaStream_t stream, bool dv_accumulate = false);

// The fused dk/dv sweep in 128-wide pieces (see hopper_pieces): dk sums over the v pieces
// (do . v), dv over the k pieces (q . k); the state dS and d_initial split by rows and columns.
// The second k piece adds into dv in the kernel (bf16: TMA reduce-add, v14; else a temporary and
// an add in run_dkdv_typed); dk's second v piece always takes a temporary: the split keeps its
// segment states in the rows of the dk piece it writes, which would hold the first piece's sum.
void run_dkdv_pieces(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& dk,
                     const Tensor& dv, float scale, const Tensor& ds_init, const Tensor& d_initial,
                     const Common& c, cudaStream_t stream) {
  const int64_t Dk = q.size(3), Dv = v.size(3);
  const Tensor dk_extra = Dv > 128 ? at::empty_like(dk) : Tensor();
  for (int64_t kp = 0; kp < Dk; kp += 128)
    for (int64_t vp = 0; vp < Dv; vp += 128)
      run_dkdv(q.narrow(3, kp, 128), k.narrow(3, kp, 128), v.narrow(3, vp, 128), dout.narrow(3, vp, 128),
               (vp == 0 ? dk : dk_extra).narrow(3, kp, 128), dv.narrow(3, vp, 128), scale,
               state_piece(ds_init, kp, vp), state_piece(d_initial, kp, vp), c, stream, /*dv_accumulate=*/kp > 0);
  if (dk_extra.defined()) dk.add_(dk_extra);
}

void run_dkdv(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& dout, const Tensor& dk,
              const Tensor& dv, float scale, const Tensor& ds_init, const Tensor& d_initial,
              const Common& c, cudaStream_t stream, bool acc) {
  switch (q.scalar_type()) {
    case at::kFloat: return run_dkdv_dims<float>(q, k, v, dout, dk, dv, scale, ds_init, d_initial, c, stream, acc);
    case at::kHalf: return run_dkdv_dims<__half>(q, k, v, dout, dk, dv, scale, ds_init, d_initial, c, stream, acc);
    default:
      return run_dkdv_dims<__nv_bfloat16>(q, k, v, dout, dk, dv, scale, ds_init, d_initial, c, stream, acc);
  }
}

// Shared setup of fwd and bwd: slope and cu_seqlens pointers, SM count.
Common make_common(const AttnDims& d, const std::optional<Tensor>& slope,
                   const std::optional<Tensor>& cu_seqlens, Tensor& slope_f, Tensor& cu) {
  Common c;
  c.B = d.B, c.T = d.T, c.H = d.H, c.N = d.N;
  if (slope.has_value()) {
    slope_f = slope->to(at::kFloat).contiguous();
    c.slope = slope_f.data_ptr<float>();
  }
  if (cu_seqlens.has_value()) {
    cu = cu_seqlens->contiguous();
    if (cu.scalar_type() == at::kInt)
      c.cu32 = cu.data_ptr<int32_t>();
    else
      c.cu64 = cu.data_ptr<int64_t>();
  }
  int dev = 0, major = 0, minor = 0;
  C10_CUDA_CHECK(cudaGetDevice(&dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&c.num_sms, cudaDevAttrMultiProcessorCount, dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  c.sm90 = major == 9 && minor == 0;
  return c;
}

std::tuple<Tensor, Tensor> fwd_cuda(const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
                                    const std::optional<Tensor>& slope, double scale,
                                    const std::optional<Tensor>& initial_state,
                                    const std::optional<Tensor>& cu_seqlens, bool head_first,
                                    bool output_final_state) {
  const AttnDims d = check_fwd_inputs(q_in, k_in, v_in, slope, initial_state, cu_seqlens, head_first);
  check_cuda_dtype(q_in, "");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Tensor slope_f, cu;
  const Common c = make_common(d, slope, cu_seqlens, slope_f, cu);

  const Tensor o_user = at::empty(user_shape(d, d.Dv, head_first), q_in.options());
  const Tensor final_state = empty_state(d, output_final_state, q_in.options());
  Problem pb;
  pb.q = canonical(q_in, head_first);
  pb.k = canonical(k_in, head_first);
  pb.v = canonical(v_in, head_first);
  pb.o = canonical(o_user, head_first);
  pb.scale_intra = float(scale), pb.scale_state = float(scale), pb.scale_upd = 1.f;
  pb.qoff = 1, pb.koff = 0, pb.reverse = false;
  if (initial_state.has_value()) pb.init = *initial_state;
  if (output_final_state) pb.final_state = final_state;
  run_problem(pb, c, stream);
  return {o_user, final_state};
}

// The backward as generic problems (chunk_params.h), with S the forward state
// and dS its gradient (dS entering from the end is d_final_state):
//   dq: forward time,  (q, k, v) = (do, v, k),  R = S^T,  scales (scale, scale, 1), qoff 1, koff 0
//   dk: reversed time, (q, k, v) = (v, do, q),  R = dS^T, scales (scale, 1, scale), qoff 0, koff 1
//   dv: reversed time, (q, k, v) = (k, q, do),  R = dS,   same scales; its final R is d_initial_state.
// Where Dk, Dv <= 128, dk and dv come from one fused reversed sweep instead (run_dkdv).
std::tuple<Tensor, Tensor, Tensor, Tensor> bwd_cuda(
    const Tensor& do_in, const Tensor& q_in, const Tensor& k_in, const Tensor& v_in,
    const std::optional<Tensor>& slope, double scale, const std::optional<Tensor>& initial_state,
    const std::optional<Tensor>& d_final_state, const std::optional<Tensor>& cu_seqlens,
    bool head_first) {
  const AttnDims d = check_fwd_inputs(q_in, k_in, v_in, slope, initial_state, cu_seqlens, head_first);
  check_bwd_inputs(do_in, v_in, d, d_final_state, head_first);
  check_cuda_dtype(q_in, "");
  const c10::cuda::CUDAGuard guard(q_in.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  Tensor slope_f, cu;
  const Common c = make_common(d, slope, cu_seqlens, slope_f, cu);

  const Tensor q = canonical(q_in, head_first), k = canonical(k_in, head_first),
               v = canonical(v_in, head_first), dout = canonical(do_in, head_first);
  const Tensor dq_user = at::empty(user_shape(d, d.Dk, head_first), q_in.options()),
               dk_user = at::empty(user_shape(d, d.Dk, head_first), q_in.options()),
               dv_user = at::empty(user_shape(d, d.Dv, head_first), q_in.options());
  const Tensor d_initial = empty_state(d, initial_state.has_value(), q_in.options());
  const float s = float(scale);
  {
    Problem pb;
    pb.q = dout, pb.k = v, pb.v = k, pb.o = canonical(dq_user, head_first);
    pb.scale_intra = s, pb.scale_state = s, pb.scale_upd = 1.f, pb.qoff = 1, pb.koff = 0;
    pb.reverse = false;
    if (initial_state.has_value()) pb.init = initial_state->transpose(2, 3);
    run_problem(pb, c, stream);
  }
  if (hopper_pieces(q, d.Dk, d.Dv, c)) {
    run_dkdv_pieces(q, k, v, dout, canonical(dk_user, head_first), canonical(dv_user, head_first), s,
                    d_final_state.has_value() ? *d_final_state : Tensor(),
                    initial_state.has_value() ? d_initial : Tensor(), c, stream);
    return {dq_user, dk_user, dv_user, d_initial};
  }
  if (d.Dk <= 128 && d.Dv <= 128) {
    // One fused reversed sweep for dk and dv (measured in KERNEL_NOTES.md).
    run_dkdv(q, k, v, dout, canonical(dk_user, head_first), canonical(dv_user, head_first), s,
             d_final_state.has_value() ? *d_final_state : Tensor(),
             initial_state.has_value() ? d_initial : Tensor(), c, stream);
    return {dq_user, dk_user, dv_user, d_initial};
  }
  {
    Problem pb;
    pb.q = v, pb.k = dout, pb.v = q, pb.o = canonical(dk_user, head_first);
    pb.scale_intra = s, pb.scale_state = 1.f, pb.scale_upd = s, pb.qoff = 0, pb.koff = 1;
    pb.reverse = true;
    if (d_final_state.has_value()) pb.init = d_final_state->transpose(2, 3);
    run_problem(pb, c, stream);
  }
  {
    Problem pb;
    pb.q = k, pb.k = q, pb.v = dout, pb.o = canonical(dv_user, head_first);
    pb.scale_intra = s, pb.scale_state = 1.f, pb.scale_upd = s, pb.qoff = 0, pb.koff = 1;
    pb.reverse = true;
    if (d_final_state.has_value()) pb.init = *d_final_state;
    if (initial_state.has_value()) pb.final_state = d_initial;
    run_problem(pb, c, stream);
  }
  return {dq_user, dk_user, dv_user, d_initial};
}

Tensor decode_cuda(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& state,
                   const std::optional<Tensor>& slope, double scale) {
  check_decode_inputs(q, k, v, state, slope);
  check_cuda_dtype(q, ".decode");
  const c10::cuda::CUDAGuard guard(q.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t B = q.size(0), H = q.size(1), Dk = q.size(2), Dv = v.size(2);
  Tensor o = at::empty({B, H, Dv}, q.options());
  Tensor slope_f;
  cuda::DecodeParams p{};
  p.q = q.data_ptr(), p.k = k.data_ptr(), p.v = v.data_ptr(), p.o = o.data_ptr();
  p.state = state.data_ptr<float>();
  p.q_sb = q.stride(0), p.q_sh = q.stride(1), p.k_sb = k.stride(0), p.k_sh = k.stride(1);
  p.v_sb = v.stride(0), p.v_sh = v.stride(1);
  p.B = int(B), p.H = int(H), p.Dk = int(Dk), p.Dv = int(Dv);
  if (slope.has_value()) {
    slope_f = slope->to(at::kFloat).contiguous();
    p.slope = slope_f.data_ptr<float>();
  }
  p.scale = float(scale);
  switch (q.scalar_type()) {
    case at::kFloat: cuda::launch_decode<float>(p, stream); break;
    case at::kHalf: cuda::launch_decode<__half>(p, stream); break;
    default: cuda::launch_decode<__nv_bfloat16>(p, stream); break;
  }
  return o;
}

}  // namespace

TORCH_LIBRARY_IMPL(lightning_attn, CUDA, m) {
  m.impl("fwd", &fwd_cuda);
  m.impl("bwd", &bwd_cuda);
  m.impl("decode", &decode_cuda);
}

}  // namespace lightning_attn
