// The generic problem runners (problem.h): params, kernel choice, split, launches.
#include "problem.h"

#include "dispatch.h"
#include "params_builder.h"
#include "plan.h"

namespace lightning_attn {
namespace cuda {
namespace {

// Pass 1 and the scan of a split call of state problem p, whose pass 2 writes `out`: returns
// where the states entering the segments are (the storage stays alive in the result).
// With state rows (a pool) the scan reads each pool row and writes it back element by element
// in one thread, and pass 2 reads the incoming states from the segment states, so init and
// final_state may be the same pool.
template <int DK, int VT, typename TIn>
SegmentStates split_states(const ChunkParams& p, const SplitPlan& plan, const ChunkChoice& ch, const at::Tensor& init,
                           const at::Tensor& final_state, const at::Tensor& rows, const at::Tensor& out,
                           const CallContext& c, cudaStream_t stream) {
  SegmentStates s = segment_states(p, plan, final_state.defined(), out, c);
  launch_chunk<DK, VT, TIn>(ch.state, /*state_only=*/true, pass1_params(p, s), ch.maps, stream);
  scan_segment_states(p, plan, s, state_ref(init, rows), state_ref(final_state, rows), c, stream);
  return s;
}

template <int DK, int VT, typename TIn>
void run_problem_typed(const Problem& pb, const CallContext& c, cudaStream_t stream) {
  TORCH_INTERNAL_ASSERT(!pb.checkpoints.defined() || pb.final_state.defined(), "checkpoints need the final state");
  ChunkParams p = chunk_params(pb, c);
  ChunkChoice ch = choose_chunk_kernel<DK, VT, TIn>(p, c);
  if (pb.accumulate && !ch.accumulates()) {  // no kernel here adds into o: a temporary and an add
    Problem tmp = pb;
    tmp.accumulate = false;
    tmp.o = at::empty_like(pb.o);
    run_problem_typed<DK, VT, TIn>(tmp, c, stream);
    pb.o.add_(tmp.o);
    return;
  }
  const int64_t nvt = (p.Dv + VT - 1) / VT;
  const SplitPlan plan = plan_split(c, c.N * c.H * nvt, ch.full_blocks_per_sm, ch.state_blocks_per_sm,
                                    pb.final_state.defined());
  p.seg_len = plan.seg_len;
  p.nseg = int(plan.nseg);
  SegmentStates s;
  if (plan.nseg == 1) {
    // Each block reads its slice of the state before it writes the same slice: in place is safe.
    p.init = state_ref(pb.init, pb.state_rows);
    p.out_state = state_ref(pb.final_state, pb.state_rows);
  } else {
    s = split_states<DK, VT, TIn>(p, plan, ch, pb.init, pb.final_state, pb.state_rows, pb.o, c, stream);
    p.init = s.s_in;  // pass 2: outputs from each segment's incoming state
  }
  p.tma_store = ch.tma_store;
  launch_chunk<DK, VT, TIn>(ch.full, /*state_only=*/false, p, ch.maps, stream);
  // The sweep stored the checkpoints it passed; those past each sequence's end are its final state.
  if (p.nckpt > 0) launch_checkpoint_tail(p, state_ref(pb.final_state, pb.state_rows), stream);
}

// [.., 128 rows from r, 128 columns from c] of a state or of checkpoints, or undefined.
at::Tensor state_piece(const at::Tensor& s, int64_t r, int64_t col) {
  return s.defined() ? s.narrow(-2, r, 128).narrow(-1, col, 128) : at::Tensor();
}

void run_problem_whole(const Problem& pb, const CallContext& c, cudaStream_t stream) {
  LIGHTNING_ATTN_DTYPE_SWITCH(pb.q.scalar_type(), [&] {
    LIGHTNING_ATTN_CHUNK_SHAPE_SWITCH(pb.q.size(3), pb.v.size(3),
                                      [&] { run_problem_typed<kDK, kVT, scalar_t>(pb, c, stream); });
  });
}

template <int DK, int DV, typename TIn>
void run_dkdv_typed(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
                    const at::Tensor& dk, const at::Tensor& dv, float scale, const at::Tensor& ds_init,
                    const at::Tensor& d_initial, const CallContext& c, cudaStream_t stream, bool dv_accumulate) {
  DkDvParams p = dkdv_params(q, k, v, dout, dk, dv, scale, c);
  p.dv_accumulate = dv_accumulate;
  const DkDvChoice ch = choose_dkdv_kernel<DK, DV, TIn>(p, c);
  if (dv_accumulate && !ch.accumulates()) {  // no kernel here adds into dv: a temporary and an add
    const at::Tensor tmp = at::empty_like(dv);
    run_dkdv_typed<DK, DV, TIn>(q, k, v, dout, dk, tmp, scale, ds_init, d_initial, c, stream, false);
    dv.add_(tmp);
    return;
  }
  // The split's pass 1 and scan are the generic state problem of dS.
  const ChunkParams ps = dkdv_state_params(q, dout, scale, c);
  const ChunkChoice sch = choose_chunk_kernel<DK, DV, TIn>(ps, c);
  const SplitPlan plan = plan_split(c, c.N * c.H, ch.blocks_per_sm, sch.state_blocks_per_sm, d_initial.defined());
  p.seg_len = plan.seg_len;
  p.nseg = int(plan.nseg);
  SegmentStates s;
  if (plan.nseg == 1) {
    p.init = state_ref(ds_init);
    p.out_state = state_ref(d_initial);
  } else {
    ChunkParams pss = ps;
    pss.seg_len = plan.seg_len;
    pss.nseg = int(plan.nseg);
    s = split_states<DK, DV, TIn>(pss, plan, sch, ds_init, d_initial, at::Tensor(), dk, c, stream);
    p.init = s.s_in;
  }
  launch_dkdv<DK, DV, TIn>(ch.variant, p, ch.maps, stream);
}

void run_dkdv_whole(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
                    const at::Tensor& dk, const at::Tensor& dv, float scale, const at::Tensor& ds_init,
                    const at::Tensor& d_initial, const CallContext& c, cudaStream_t stream, bool dv_accumulate) {
  LIGHTNING_ATTN_DTYPE_SWITCH(q.scalar_type(), [&] {
    LIGHTNING_ATTN_DKDV_SHAPE_SWITCH(q.size(3), dout.size(3), [&] {
      run_dkdv_typed<kDK, kDV, scalar_t>(q, k, v, dout, dk, dv, scale, ds_init, d_initial, c, stream, dv_accumulate);
    });
  });
}

}  // namespace

void run_problem(const Problem& pb, const CallContext& c, cudaStream_t stream) {
  const int64_t Dk = pb.q.size(3), Dv = pb.v.size(3);
  if (!hopper_pieces(pb.q.scalar_type(), Dk, Dv, c)) return run_problem_whole(pb, c, stream);
  // 128-wide pieces (dispatch.h): each v piece writes its columns; the second k piece adds into o.
  for (int64_t kp = 0; kp < Dk; kp += 128)
    for (int64_t vp = 0; vp < Dv; vp += 128) {
      Problem sub = pb;
      sub.q = pb.q.narrow(3, kp, 128), sub.k = pb.k.narrow(3, kp, 128), sub.v = pb.v.narrow(3, vp, 128);
      sub.o = pb.o.narrow(3, vp, 128);
      sub.accumulate = kp > 0;
      sub.init = state_piece(pb.init, kp, vp);
      sub.final_state = state_piece(pb.final_state, kp, vp);
      sub.checkpoints = state_piece(pb.checkpoints, kp, vp);
      run_problem_whole(sub, c, stream);
    }
}

bool fused_dkdv(at::ScalarType dtype, int64_t Dk, int64_t Dv, const CallContext& c) {
  return hopper_pieces(dtype, Dk, Dv, c) || (Dk <= 128 && Dv <= 128);
}

// In 128-wide pieces (hopper_pieces), dk sums over the v pieces (do . v), dv over the k pieces
// (q . k); dS and d_initial split by rows and columns. The second k piece adds into dv in the
// kernel where it can (bf16), else a temporary and an add; dk's second v piece always takes a
// temporary: the split keeps its segment states in the rows of the dk piece it writes, which
// would hold the first piece's sum.
void run_dkdv(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& dout,
              const at::Tensor& dk, const at::Tensor& dv, float scale, const at::Tensor& ds_init,
              const at::Tensor& d_initial, const CallContext& c, cudaStream_t stream) {
  const int64_t Dk = q.size(3), Dv = v.size(3);
  if (!hopper_pieces(q.scalar_type(), Dk, Dv, c))
    return run_dkdv_whole(q, k, v, dout, dk, dv, scale, ds_init, d_initial, c, stream, false);
  const at::Tensor dk_extra = Dv > 128 ? at::empty_like(dk) : at::Tensor();
  for (int64_t kp = 0; kp < Dk; kp += 128)
    for (int64_t vp = 0; vp < Dv; vp += 128)
      run_dkdv_whole(q.narrow(3, kp, 128), k.narrow(3, kp, 128), v.narrow(3, vp, 128), dout.narrow(3, vp, 128),
                     (vp == 0 ? dk : dk_extra).narrow(3, kp, 128), dv.narrow(3, vp, 128), scale,
                     state_piece(ds_init, kp, vp), state_piece(d_initial, kp, vp), c, stream, /*dv_accumulate=*/kp > 0);
  if (dk_extra.defined()) dk.add_(dk_extra);
}

}  // namespace cuda
}  // namespace lightning_attn
