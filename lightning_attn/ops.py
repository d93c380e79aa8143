"""The lightning_attn operators: fake kernels, autograd, and the public functions.

The schemas and the CPU/CUDA kernels live in csrc/ (csrc/ops.cpp declares every op);
this file makes them work under torch.compile (fake kernels) and autograd
(register_autograd, whose backward calls another registered op).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from . import _C  # noqa: F401  (loads the library, registering torch.ops.lightning_attn)

_ops = torch.ops.lightning_attn


def _state_dtype(x: Tensor) -> torch.dtype:
    """Accumulation / state dtype for inputs like x: float64 for float64, else float32
    (the C++ side's acc_dtype in checks.h)."""
    return acc_dtype(x.dtype)


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _dims(q: Tensor, v: Tensor, cu_seqlens: Optional[Tensor], head_first: bool):
    torch._check(q.dim() == 4, lambda: f"lightning_attn: q must be a 4-D tensor, got shape {tuple(q.shape)}")
    B, T, H = (q.shape[0], q.shape[2], q.shape[1]) if head_first else q.shape[:3]
    N = cu_seqlens.shape[0] - 1 if cu_seqlens is not None else B
    return B, T, H, q.shape[3], v.shape[3], N


def _user_shape(B, T, H, D, head_first):
    return (B, H, T, D) if head_first else (B, T, H, D)


# ----------------------------------------------------------------------------- fake kernels


@torch.library.register_fake("lightning_attn::fwd")
def _fwd_fake(q, k, v, slope, scale, initial_state, cu_seqlens, head_first, output_final_state):
    B, T, H, Dk, Dv, N = _dims(q, v, cu_seqlens, head_first)
    for name, x in (("k", k), ("v", v), ("slope", slope), ("initial_state", initial_state), ("cu_seqlens", cu_seqlens)):
        torch._check_value(x is None or x.device == q.device,
                           lambda: f"lightning_attn: {name} must be on the same device as q ({q.device})")
    torch._check_value(k.shape == q.shape, lambda: f"lightning_attn: k must have q's shape {tuple(q.shape)}")
    torch._check_value(k.dtype == q.dtype and v.dtype == q.dtype, lambda: "lightning_attn: k and v must have q's dtype")
    if initial_state is not None:
        torch._check_value(tuple(initial_state.shape) == (N, H, Dk, Dv),
                     lambda: f"lightning_attn: initial_state must have shape {(N, H, Dk, Dv)}")
    o = q.new_empty(_user_shape(B, T, H, Dv, head_first))
    final_shape = (N, H, Dk, Dv) if output_final_state else (0,)
    return o, q.new_empty(final_shape, dtype=_state_dtype(q))


@torch.library.register_fake("lightning_attn::bwd")
def _bwd_fake(do, q, k, v, slope, scale, initial_state, d_final_state, cu_seqlens, head_first):
    B, T, H, Dk, Dv, N = _dims(q, v, cu_seqlens, head_first)
    torch._check(do.shape == v.shape, lambda: f"lightning_attn: do must have v's shape {tuple(v.shape)}")
    dh0_shape = (N, H, Dk, Dv) if initial_state is not None else (0,)
    return (q.new_empty(_user_shape(B, T, H, Dk, head_first)), q.new_empty(_user_shape(B, T, H, Dk, head_first)),
            q.new_empty(_user_shape(B, T, H, Dv, head_first)), q.new_empty(dh0_shape, dtype=_state_dtype(q)))


@torch.library.register_fake("lightning_attn::decode")
def _decode_fake(q, k, v, state, slope, scale):
    torch._check(q.dim() == 3 and v.dim() == 3, lambda: "lightning_attn.decode: q, k, v must be [B, H, D]")
    torch._check(tuple(state.shape) == (q.shape[0], q.shape[1], q.shape[2], v.shape[2]),
                 lambda: "lightning_attn.decode: state must have shape [B, H, Dk, Dv]")
    return q.new_empty((q.shape[0], q.shape[1], v.shape[2]))


@torch.library.register_fake("lightning_attn::srms_norm_fwd")
def _srms_norm_fwd_fake(x, eps):
    return torch.empty_like(x), x.new_empty(x.shape[:-1], dtype=_state_dtype(x))


@torch.library.register_fake("lightning_attn::srms_norm_bwd")
def _srms_norm_bwd_fake(dy, x, rstd):
    return torch.empty_like(x)


# ----------------------------------------------------------------------------- autograd


def _last_dim_contiguous(x: Tensor) -> Tensor:
    # Gradients may arrive expanded (stride 0) or transposed; the kernels need stride 1.
    return x if x.stride(-1) == 1 else x.contiguous()


def _fwd_setup_context(ctx, inputs, output):
    q, k, v, slope, scale, initial_state, cu_seqlens, head_first, _ = inputs
    ctx.save_for_backward(q, k, v, slope, initial_state, cu_seqlens)
    ctx.scale, ctx.head_first = scale, head_first


def _fwd_backward(ctx, do, d_final_state):
    q, k, v, slope, initial_state, cu_seqlens = ctx.saved_tensors
    if d_final_state is not None and d_final_state.numel() == 0:
        d_final_state = None
    if d_final_state is not None:
        d_final_state = d_final_state.contiguous()
    dq, dk, dv, dh0 = _ops.bwd(_last_dim_contiguous(do), q, k, v, slope, ctx.scale, initial_state,
                               d_final_state, cu_seqlens, ctx.head_first)
    return dq, dk, dv, None, None, (dh0 if initial_state is not None else None), None, None, None


torch.library.register_autograd("lightning_attn::fwd", _fwd_backward, setup_context=_fwd_setup_context)


def _srms_setup_context(ctx, inputs, output):
    x, _ = inputs
    _, rstd = output
    ctx.save_for_backward(x, rstd)


def _srms_backward(ctx, dy, _drstd):
    x, rstd = ctx.saved_tensors
    return _ops.srms_norm_bwd(dy.contiguous(), x, rstd), None


torch.library.register_autograd("lightning_attn::srms_norm_fwd", _srms_backward, setup_context=_srms_setup_context)


# ----------------------------------------------------------------------------- public API


def lightning_attn_func(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slope: Optional[Tensor] = None,
    scale: float = 1.0,
    initial_state: Optional[Tensor] = None,
    output_final_state: bool = False,
    cu_seqlens: Optional[Tensor] = None,
    head_first: bool = False,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Causal linear attention with a per-head decay (Lightning Attention-2), chunked.

    Per sequence and head, with lambda = exp(-slope):
    ``S_t = lambda * S_{t-1} + k_t v_t^T;  o_t = scale * S_t^T q_t``.

    Args:
        q, k: ``[B, T, H, Dk]`` (``[B, H, T, Dk]`` with ``head_first=True``), float32/16 or bfloat16.
        v: ``[B, T, H, Dv]`` (``[B, H, T, Dv]`` with ``head_first=True``). Dk, Dv <= 256.
        slope: float32 ``[H]``, >= 0, or None for no decay. Gets no gradient.
        scale: multiplies the output (TNL uses 1.0, no 1/sqrt(d)).
        initial_state: float32 ``[N, H, Dk, Dv]``, the state before the first token of each sequence.
        output_final_state: also return the float32 state after the last token.
        cu_seqlens: int32/int64 ``[N + 1]`` offsets of N sequences packed into ``B = 1``;
            the state resets at each start.
        head_first: inputs are ``[B, H, T, D]``; read in place, no copy.

    Returns:
        ``(o, final_state)``: o like v in q's dtype and layout; final_state ``[N, H, Dk, Dv]`` float32 or None.

    Example:
        >>> q, k, v = (torch.randn(2, 1024, 8, 64) for _ in range(3))
        >>> o, s = lightning_attn_func(q, k, v, slope=tnl_slopes(8, 0, 12), output_final_state=True)
    """
    o, final_state = _ops.fwd(q, k, v, slope, float(scale), initial_state, cu_seqlens, head_first,
                              output_final_state)
    return o, (final_state if output_final_state else None)


def lightning_attn_decode(
    q: Tensor, k: Tensor, v: Tensor, state: Tensor, slope: Optional[Tensor] = None, scale: float = 1.0
) -> Tensor:
    """One decoding step for a batch of sequences; updates ``state`` in place.

    ``state <- lambda * state + k v^T;  o = scale * state^T q`` with lambda = exp(-slope).

    Args:
        q, k: ``[B, H, Dk]``; v: ``[B, H, Dv]``; any float dtype of the contract.
        state: float32 ``[B, H, Dk, Dv]``, contiguous; e.g. the final_state of a prefill.
        slope: float32 ``[H]`` or None.

    Returns:
        o: ``[B, H, Dv]`` in q's dtype.

    Example:
        >>> state = torch.zeros(4, 8, 64, 64)
        >>> o = lightning_attn_decode(q_t, k_t, v_t, state, slope)
    """
    return _ops.decode(q, k, v, state, slope, float(scale))


def srms_norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """SRMSNorm (TNL's norm, no learned gain): ``y = x * rsqrt(mean(x^2, -1) + eps)``.

    Args:
        x: ``[..., D]``, float32/16 or bfloat16; statistics in float32.

    Returns:
        y: like x.

    Example:
        >>> y = srms_norm(torch.randn(2, 16, 512))
    """
    if torch.compiler.is_compiling() and x.is_cuda:
        # Inside a compiled graph the formula (same float32 statistics) lets inductor fuse the
        # norm into its neighbours (residual add, gate) and recompute it in the backward
        # instead of saving it; eager calls, the CPU and LibTorch use the op's kernels.
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    return _ops.srms_norm_fwd(x, float(eps))[0]
