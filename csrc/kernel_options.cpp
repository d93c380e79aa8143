#include "kernel_options.h"

#include <mutex>
#include <string>

#include <torch/library.h>

namespace lightning_attn {
namespace {

std::mutex& options_mutex() {
  static std::mutex m;
  return m;
}

KernelOptions& current_options() {
  static KernelOptions options;
  return options;
}

void set_kernel_options_op(bool split, int64_t split_subsegments, bool states_in_output_rows, bool hopper,
                           bool hopper_d64, bool accumulate_in_kernel, bool tma_loads, bool tma_stores) {
  TORCH_CHECK_VALUE(split_subsegments >= 0, "lightning_attn: split_subsegments must be >= 0, got ",
                    std::to_string(split_subsegments));
  set_kernel_options({split, split_subsegments, states_in_output_rows, hopper, hopper_d64, accumulate_in_kernel,
                      tma_loads, tma_stores});
}

}  // namespace

KernelOptions kernel_options() {
  const std::lock_guard<std::mutex> lock(options_mutex());
  return current_options();
}

void set_kernel_options(const KernelOptions& options) {
  const std::lock_guard<std::mutex> lock(options_mutex());
  current_options() = options;
}

// The op takes no tensors, so it has one kernel for every dispatch key.
TORCH_LIBRARY_FRAGMENT(lightning_attn, m) {
  m.def(
      "_set_kernel_options(bool split, int split_subsegments, bool states_in_output_rows, bool hopper, "
      "bool hopper_d64, bool accumulate_in_kernel, bool tma_loads, bool tma_stores) -> ()",
      &set_kernel_options_op);
}

}  // namespace lightning_attn
