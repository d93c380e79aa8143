// The sequence split. When the (sequence, head, v-tile) blocks of a call cannot fill the
// GPU, each sequence is cut into segments: pass 1 computes each segment's local state
// (state-only blocks), a scan combines them with lambda^segment_length, and pass 2 computes
// the outputs from each segment's incoming state. No host synchronisation; workspaces come
// from the caching allocator on the current stream, so split calls capture in CUDA graphs.
#pragma once

#include <cstdint>

#include <ATen/ATen.h>

#include "context.h"
#include "params.h"

namespace lightning_attn {
namespace cuda {

struct SplitPlan {
  int64_t nseg = 1, seg_len = 0;  // segments of pass 2 and their length in tokens
  int64_t F = 1;                  // pass-1 sub-segments per segment
};

// The plan for a call of base_blocks blocks per segment whose full sweep fits blocks_per_sm
// blocks on an SM and whose pass 1 fits state_blocks_per_sm. all_segments: pass 1 covers the
// last segment too (a final state is asked for).
SplitPlan plan_split(const CallContext& c, int64_t base_blocks, int blocks_per_sm, int state_blocks_per_sm,
                     bool all_segments);

// Where a split call keeps its states: the sub-segments' local states (pass 1's output) and
// the states entering the segments (the scan's output, pass 2's input).
struct SegmentStates {
  StateRef local, s_in;
  int64_t sub_len = 0, nsub = 0, nlocal = 0;  // sub-segment length, count, and how many have a local state
  at::Tensor workspace;                       // owns local and s_in unless they live in the output's rows
};

// Storage for the states of state problem p split by plan: the rows of `out` (pass 2's
// output, [B, T, H, 128] 16-bit) where they fit, else a workspace.
SegmentStates segment_states(const ChunkParams& p, const SplitPlan& plan, bool final_state, const at::Tensor& out,
                             const CallContext& c);

// Pass 1's params: p's k, v, scales and direction over the sub-segments, writing local states.
ChunkParams pass1_params(const ChunkParams& p, const SegmentStates& s);

// The scan after pass 1: the state entering each segment (into s.s_in) and the final state
// (written where final_state is defined).
void scan_segment_states(const ChunkParams& p, const SplitPlan& plan, const SegmentStates& s, const StateRef& init,
                         const StateRef& final_state, const CallContext& c, cudaStream_t stream);

}  // namespace cuda
}  // namespace lightning_attn
