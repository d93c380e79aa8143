"""The lightning_attn operators: autograd and the public functions.

The schemas and the kernels live in csrc/ (csrc/ops.cpp declares every op). Besides the
CPU and CUDA kernels each op has a C++ Meta kernel (csrc/meta), which FakeTensorMode and
torch.compile trace through; it runs the input checks of csrc/checks.h that the CPU and
CUDA kernels run, so there is no Python fake kernel and no Python copy of the rules. This
file adds autograd (register_autograd, whose backward calls another registered op).
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
    *,
    slot_ids: Optional[Tensor] = None,
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
        slot_ids: int32 ``[N]`` on q's device, a prefill into a state pool (serving): then
            ``initial_state`` is the pool, float32 ``[num_slots, H, Dk, Dv]``; sequence n starts
            from row ``slot_ids[n]`` and its final state is written back into that row, in place,
            with no gather or scatter copy. -1 runs the sequence from a zero state and leaves the
            pool untouched. Checked on the CPU (in range, distinct); on CUDA, with no host
            synchronisation, any id outside ``[0, num_slots)`` acts as -1 and repeated ids race.
            Inference only: no gradients, ``output_final_state`` must be False (the pool holds it).

    Returns:
        ``(o, final_state)``: o like v in q's dtype and layout; final_state ``[N, H, Dk, Dv]`` float32 or None
        (None with ``slot_ids``).

    Example:
        >>> q, k, v = (torch.randn(2, 1024, 8, 64) for _ in range(3))
        >>> o, s = lightning_attn_func(q, k, v, slope=tnl_slopes(8, 0, 12), output_final_state=True)
        >>> pool = torch.zeros(64, 8, 64, 64)                          # 64 slots
        >>> o, _ = lightning_attn_func(q, k, v, slope, initial_state=pool,
        ...                            slot_ids=torch.tensor([5, 9], dtype=torch.int32))  # pool[5], pool[9] updated
    """
    if slot_ids is not None:
        if initial_state is None:
            raise ValueError("lightning_attn: slot_ids needs initial_state, the state pool [num_slots, H, Dk, Dv]")
        if output_final_state:
            raise ValueError("lightning_attn: with slot_ids the final states go into the pool rows; "
                             "output_final_state must be False")
        if torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v, initial_state)):
            raise ValueError("lightning_attn: slot_ids (a prefill into a state pool) computes no gradients; "
                             "call it under torch.no_grad() or with inputs that do not require grad")
        return _ops.fwd_slots(q, k, v, slope, float(scale), initial_state, slot_ids, cu_seqlens, head_first), None
    o, final_state = _ops.fwd(q, k, v, slope, float(scale), initial_state, cu_seqlens, head_first,
                              output_final_state)
    return o, (final_state if output_final_state else None)


def lightning_attn_decode(
    q: Tensor, k: Tensor, v: Tensor, state: Tensor, slope: Optional[Tensor] = None, scale: float = 1.0,
    *, slot_ids: Optional[Tensor] = None,
) -> Tensor:
    """One decoding step for a batch of sequences; updates ``state`` in place.

    ``state <- lambda * state + k v^T;  o = scale * state^T q`` with lambda = exp(-slope).

    Args:
        q, k: ``[B, H, Dk]``; v: ``[B, H, Dv]``; any float dtype of the contract.
        state: float32 ``[B, H, Dk, Dv]``, contiguous; e.g. the final_state of a prefill. Or a
            state pool ``[num_slots, H, Dk, Dv]`` with ``slot_ids``.
        slope: float32 ``[H]`` or None.
        slot_ids: int32 ``[B]``, each sequence's row of the pool (-1: skip, zero output); as
            in :func:`lightning_attn_decode_tokens`.

    Returns:
        o: ``[B, H, Dv]`` in q's dtype.

    Example:
        >>> state = torch.zeros(4, 8, 64, 64)
        >>> o = lightning_attn_decode(q_t, k_t, v_t, state, slope)
    """
    if slot_ids is not None:
        o, _ = _ops.decode_tokens(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), state, slope, float(scale),
                                  slot_ids, None, False)
        return o.squeeze(1)
    return _ops.decode(q, k, v, state, slope, float(scale))


def lightning_attn_decode_tokens(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    state: Tensor,
    slope: Optional[Tensor] = None,
    scale: float = 1.0,
    *,
    slot_ids: Optional[Tensor] = None,
    num_accepted: Optional[Tensor] = None,
    output_states: bool = False,
) -> Tuple[Tensor, Optional[Tensor]]:
    """K tokens per sequence in one launch: multi-token decode and speculative verify.

    Equal to K calls of :func:`lightning_attn_decode`, token after token, from each sequence's
    state. What happens to ``state``:

    - neither ``num_accepted`` nor ``output_states``: advanced in place by all K tokens;
    - ``output_states=True``: only read; the state after each token is returned (verify
      first, then keep ``states[b, a - 1]`` for the ``a`` accepted tokens);
    - ``num_accepted`` (int32/int64 ``[B]``, on the device): advanced by exactly
      ``num_accepted[b]`` tokens (0 leaves it as it was), outputs for all K.

    Args:
        q, k: ``[B, K, H, Dk]``; v: ``[B, K, H, Dv]``; 1 <= K <= 16.
        state: float32 ``[B, H, Dk, Dv]``, or a pool ``[num_slots, H, Dk, Dv]`` with ``slot_ids``.
        slot_ids: int32 ``[B]``, the pool row of each sequence; -1 skips a sequence (zero
            outputs, pool untouched). Checked on the CPU (in range, distinct); on CUDA, with
            no host synchronisation, ids outside ``[0, num_slots)`` skip and ``num_accepted``
            is clamped to ``[0, K]``.

    Returns:
        ``(o, states)``: o ``[B, K, H, Dv]`` in q's dtype; states float32 ``[B, K, H, Dk, Dv]``
        with ``output_states``, else None.

    Example:
        >>> o, states = lightning_attn_decode_tokens(q, k, v, pool, slope, slot_ids=slots, output_states=True)
    """
    o, states = _ops.decode_tokens(q, k, v, state, slope, float(scale), slot_ids, num_accepted, output_states)
    return o, (states if output_states else None)


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
