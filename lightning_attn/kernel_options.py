"""Options that force a CUDA kernel path, for tests and benchmarks that compare paths.

Users never need them: the defaults are the fastest paths measured (docs/kernels.md). The
options live in the extension (csrc/kernel_options.h); each CUDA call reads them once at its
start. Not thread-safe across Python threads that set different options at the same time.
"""
import contextlib
import dataclasses

import torch

from . import _C  # noqa: F401  (registers torch.ops.lightning_attn)


@dataclasses.dataclass(frozen=True)
class KernelOptions:
    """Which kernel paths the CUDA ops may take.

    Attributes:
        split: cut sequences into segments when the (sequence, head) blocks cannot fill the GPU.
        split_subsegments: pass-1 sub-segments per segment; 0 lets the planner choose.
        states_in_output_rows: keep segment states in the rows of the output where they fit
            (False: always in a workspace).
        hopper: use the sm_90a kernels where they apply (False: the portable kernels only).
        hopper_d64: use the sm_90a kernels at Dk = Dv = 64 too.
        accumulate_in_kernel: the Dk = 256 pieces add into o / dv inside the kernel
            (False: a temporary and an add).
        tma_loads: bulk tensor copies (TMA) in the Hopper chunk kernel (False: cp.async loads and
            row stores).
        tma_stores: outputs staged in shared memory and written by TMA stores (False: row stores).
    """

    split: bool = True
    split_subsegments: int = 0
    states_in_output_rows: bool = True
    hopper: bool = True
    hopper_d64: bool = True
    accumulate_in_kernel: bool = True
    tma_loads: bool = True
    tma_stores: bool = True


_current = KernelOptions()


def _apply(options: KernelOptions) -> None:
    global _current
    torch.ops.lightning_attn._set_kernel_options(*dataclasses.astuple(options))
    _current = options


def set_kernel_options(options: KernelOptions) -> None:
    """Set the options until changed again (for scripts that step through variants)."""
    _apply(options)


def current_kernel_options() -> KernelOptions:
    """The options in force."""
    return _current


@contextlib.contextmanager
def kernel_options(**overrides):
    """Run the block with some kernel options changed; the previous options come back after.

    Example:
        >>> with kernel_options(hopper=False, split=False):
        ...     o, _ = lightning_attn_func(q, k, v, slope)   # portable kernel, no sequence split
    """
    previous = _current
    _apply(dataclasses.replace(previous, **overrides))
    try:
        yield _current
    finally:
        _apply(previous)
