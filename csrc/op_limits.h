// Size limits of the op contract, shared by the checks (checks.h) and the CUDA kernels
// (cuda/params.h). Not named limits.h: csrc is on the include path and would shadow <limits.h>.
#pragma once

#include <cstdint>

namespace lightning_attn {

constexpr int64_t kMaxHeadDim = 256;
// Tokens per sequence in one decode_tokens call (a speculative draft and its bonus token).
constexpr int kMaxDecodeTokens = 16;

}  // namespace lightning_attn
