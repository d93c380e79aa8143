// The split planner and the segment states (plan.h).
#include "plan.h"

#include <algorithm>

#include "launch.h"

namespace lightning_attn {
namespace cuda {

// Split each sequence into nseg segments when the plain grid (base_blocks) would leave SMs
// idle. The split costs a second read of k and v (pass 1), so it is used only below one full
// wave. Pass 1 (local states) runs on F-times finer sub-segments: its blocks are light
// (K^T V only) and need several per SM to keep enough loads in flight, but all of them must
// fit in one wave (a second, partial wave cost up to 40% of pass 1: docs/kernels.md).
SplitPlan plan_split(const CallContext& c, int64_t base_blocks, int blocks_per_sm, int state_blocks_per_sm,
                     bool all_segments) {
  SplitPlan s;
  const int64_t capacity = int64_t(c.device.num_sms) * blocks_per_sm;
  const int64_t chunks = (c.T + kChunk - 1) / kChunk;
  const bool split = base_blocks > 0 && base_blocks < capacity && c.options.split;
  int64_t nseg = split ? std::min<int64_t>(capacity / base_blocks, chunks) : 1;
  nseg = std::max<int64_t>(1, std::min<int64_t>(nseg, 65535));  // grid.y
  int64_t seg_chunks = (chunks + nseg - 1) / nseg;
  if (nseg > 1) {
    const int64_t capacity1 = int64_t(c.device.num_sms) * state_blocks_per_sm;
    const int64_t f = c.options.split_subsegments, pass1_segs = all_segments ? nseg : nseg - 1;
    const int64_t one_wave = capacity1 / (base_blocks * pass1_segs);
    s.F = std::max<int64_t>(1, std::min<int64_t>({seg_chunks, f > 0 ? f : one_wave, f > 0 ? f : 8}));
    seg_chunks = (seg_chunks + s.F - 1) / s.F * s.F;
  }
  s.nseg = (chunks + seg_chunks - 1) / seg_chunks;  // no trailing empty segments
  s.seg_len = seg_chunks * kChunk;
  if (s.nseg == 1) s.F = 1;
  return s;
}

namespace {

// States [nseg, N, H, Dk, Dv] in a workspace, as views of `holder` from `offset` floats on.
StateRef workspace_ref(const at::Tensor& holder, int64_t offset, const CallContext& c, int64_t Dk, int64_t Dv) {
  StateRef r;
  r.ptr = holder.data_ptr<float>() + offset;
  r.sv = 1, r.sk = Dv, r.sh = Dk * Dv, r.sn = c.H * Dk * Dv, r.sseg = c.N * c.H * Dk * Dv;
  return r;
}

// Segment states in the rows of `out` ([B, T, H, 128], 16-bit), the output pass 2 writes:
// a 128 x 128 fp32 state is two 64-column panels of 128 rows, each 256-byte state row one
// output row. Sub-segment j keeps its local state in its first 256 rows (in the problem's
// time direction), and the state entering segment s sits in the next 256 rows of the
// segment's first sub-segment. Pass 1 and the scan run before pass 2 (stream order); each
// pass-2 block reads the rows of its own segment into registers before its first block-wide
// barrier and writes them only from its fifth chunk on. Requires whole sequences (no
// cu_seqlens) and sub-segments of at least 512 tokens.
bool rows_hold_states(const at::Tensor& out, const ChunkParams& p, const SplitPlan& plan, int64_t sub_len,
                      int64_t nsub, bool final_state, const CallContext& c) {
  if (!out.defined() || !c.options.states_in_output_rows || c.cu32 || c.cu64 || p.o_accumulate) return false;
  if (out.scalar_type() != at::kHalf && out.scalar_type() != at::kBFloat16) return false;
  if (out.size(3) != 128 || p.Dk != 128 || p.Dv != 128 || out.stride(3) != 1) return false;
  if (reinterpret_cast<uintptr_t>(out.data_ptr()) % 16 || out.stride(0) % 2 || out.stride(1) % 2 ||
      out.stride(2) % 2)
    return false;
  const int64_t last_seg = c.T - (plan.nseg - 1) * plan.seg_len, last_sub = c.T - (nsub - 1) * sub_len;
  return sub_len >= 512 && last_seg >= 512 && (!final_state || last_sub >= 256);
}

// {local states of the sub-segments, states entering the segments} in out's rows.
void row_states(const at::Tensor& out, bool reverse, const SplitPlan& plan, const CallContext& c, SegmentStates& s) {
  float* base = static_cast<float*>(out.data_ptr());
  const int64_t rs = out.stride(1) / 2;  // floats between output rows
  const int64_t dir = reverse ? -1 : 1;  // reversed time starts at row T - 1 and goes up
  StateRef& loc = s.local;
  loc.ptr = base + (reverse ? (c.T - 1) * rs : 0);
  loc.sseg = dir * s.sub_len * rs, loc.sn = out.stride(0) / 2, loc.sh = out.stride(2) / 2;
  loc.sk = dir * rs, loc.sv = 1, loc.spx = dir * 128 * rs - 64;
  s.s_in = loc;
  s.s_in.ptr = loc.ptr + dir * 256 * rs;
  s.s_in.sseg = dir * plan.seg_len * rs;
}

}  // namespace

// Without a final state the last segment's sub-segments are skipped: no later segment needs
// them (saves 1/nseg of pass 1, half of it at nseg = 2).
SegmentStates segment_states(const ChunkParams& p, const SplitPlan& plan, bool final_state, const at::Tensor& out,
                             const CallContext& c) {
  SegmentStates s;
  s.sub_len = plan.seg_len / plan.F;
  s.nsub = (c.T + s.sub_len - 1) / s.sub_len;
  s.nlocal = final_state ? s.nsub : (plan.nseg - 1) * plan.F;
  if (rows_hold_states(out, p, plan, s.sub_len, s.nsub, final_state, c)) {
    row_states(out, p.reverse, plan, c, s);
  } else {
    const int64_t per = c.N * c.H * p.Dk * p.Dv;
    const auto fopts = at::TensorOptions().device(at::kCUDA, c10::cuda::current_device()).dtype(at::kFloat);
    s.workspace = at::empty({(s.nlocal + plan.nseg) * per}, fopts);
    s.local = workspace_ref(s.workspace, 0, c, p.Dk, p.Dv);
    s.s_in = workspace_ref(s.workspace, s.nlocal * per, c, p.Dk, p.Dv);
  }
  return s;
}

ChunkParams pass1_params(const ChunkParams& p, const SegmentStates& s) {
  ChunkParams p1 = p;
  p1.q = nullptr;
  p1.o = nullptr;
  p1.o_accumulate = false;
  p1.init = StateRef{};
  p1.seg_len = s.sub_len;
  p1.nseg = int(s.nlocal);
  p1.out_state = s.local;
  return p1;
}

void scan_segment_states(const ChunkParams& p, const SplitPlan& plan, const SegmentStates& s, const StateRef& init,
                         const StateRef& final_state, const CallContext& c, cudaStream_t stream) {
  ScanParams sp{};
  sp.local = s.local;
  sp.s_in = s.s_in;
  sp.init = init;
  sp.final_state = final_state;
  sp.Dk = p.Dk, sp.Dv = p.Dv, sp.H = p.H, sp.N = p.N, sp.T = p.T;
  sp.seg_len = s.sub_len, sp.nseg = int(s.nsub), sp.F = int(plan.F), sp.nlocal = int(s.nlocal);
  sp.cu32 = c.cu32, sp.cu64 = c.cu64, sp.slope = c.slope;
  launch_scan(sp, stream);
}

}  // namespace cuda
}  // namespace lightning_attn
