"""Prefill that also keeps the state every N tokens (prefix caching in serving engines).

For N a multiple of 64 and no gradients, one op (fwd_checkpoints): the forward's own sweep
stores the state each time it passes a checkpoint, so the cost over a plain forward is the
write of the checkpoints (measured: docs/kernels.md). Otherwise two fwd calls, whatever the
length: each sequence is cut into segments of N tokens by refining cu_seqlens (a view, no
copy of q, k, v); a first pass gives each segment's state from zero, a scan over the segments
(lambda^len S + local, a few small ops per segment index) gives the state entering each
segment, and a second pass from those states gives the outputs and, as its final states, the
checkpoints. Gradients flow through both passes (the ops' autograd).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from .ops import _ops


def _segments(lengths: list, starts: list, N: int):
    """For each sequence (length, start): its segments' offsets; returns the refined cu_seqlens
    (host list), the owning sequence and index of each segment, and the segment lengths."""
    cu, seq, idx, lens = [0], [], [], []
    for n, (L, s) in enumerate(zip(lengths, starts)):
        for j in range((L + N - 1) // N):
            ln = min(N, L - j * N)
            cu.append(s + j * N + ln)
            seq.append(n), idx.append(j), lens.append(ln)
    return cu, seq, idx, lens


def lightning_attn_prefill(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    checkpoint_every: int,
    slope: Optional[Tensor] = None,
    scale: float = 1.0,
    initial_state: Optional[Tensor] = None,
    cu_seqlens: Optional[Tensor] = None,
    max_seqlen: Optional[int] = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """:func:`lightning_attn_func` that also returns the state every ``checkpoint_every`` tokens.

    Args:
        q, k, v, slope, scale, initial_state, cu_seqlens: as in :func:`lightning_attn_func`
            (``[B, T, H, D]`` layout).
        checkpoint_every: N >= 1. A multiple of 64 takes the one-pass op when no gradient is
            needed; any other N (or gradients) runs two forward passes.
        max_seqlen: with cu_seqlens, the longest sequence (sizes the checkpoints). Given, the
            one-pass op runs without a host synchronisation (so it captures in a CUDA graph);
            a longer sequence's checkpoints past ``ceil(max_seqlen / N)`` are not kept.

    Returns:
        ``(o, final_state, checkpoints)``: checkpoints float32 ``[N_seq, ceil(L / N), H, Dk, Dv]``,
        ``checkpoints[n, j]`` the state after ``min((j + 1) N, len_n)`` tokens of sequence n
        (L: the padded length T, or with cu_seqlens the longest sequence; past a sequence's end
        its final state repeats; a sequence of length 0 keeps its initial state). With
        cu_seqlens and without max_seqlen the lengths are read on the host (one synchronisation).

    Example:
        >>> o, final, ckpt = lightning_attn_prefill(q, k, v, 1024, slope)   # ckpt[:, 3]: after 4096 tokens
    """
    if not isinstance(checkpoint_every, int) or checkpoint_every < 1:
        raise ValueError(f"lightning_attn_prefill: checkpoint_every must be an int >= 1, got {checkpoint_every!r}")
    if q.dim() != 4:
        raise ValueError(f"lightning_attn_prefill: q must be a 4-D tensor [B, T, H, D], got shape {list(q.shape)}")
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    Nc = checkpoint_every
    if cu_seqlens is not None and max_seqlen is None:
        max_seqlen = int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if cu_seqlens.numel() > 1 else 0
    J = ((T if cu_seqlens is None else max_seqlen) + Nc - 1) // Nc
    leaves = (q, k, v, slope, initial_state)
    needs_grad = torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in leaves)
    if Nc % 64 == 0 and not needs_grad:
        return _ops.fwd_checkpoints(q, k, v, slope, float(scale), initial_state, cu_seqlens, False, Nc, J)
    return _two_pass(q, k, v, Nc, J, slope, scale, initial_state, cu_seqlens)


def _two_pass(q, k, v, Nc, J, slope, scale, initial_state, cu_seqlens):
    """The checkpoints from two fwd calls over N-token segments (any N; autograd through both)."""
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    if cu_seqlens is None:
        lengths, starts = [T] * B, [b * T for b in range(B)]
        q1, k1, v1 = (x.reshape(1, B * T, H, x.shape[-1]) for x in (q, k, v))
    else:
        offs = cu_seqlens.tolist()
        lengths, starts = [b - a for a, b in zip(offs[:-1], offs[1:])], offs[:-1]
        q1, k1, v1 = q, k, v
    n_seq = len(lengths)
    cu, seq, idx, lens = _segments(lengths, starts, Nc)
    dev = q.device
    state_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32
    h0 = (initial_state if initial_state is not None
          else torch.zeros(n_seq, H, Dk, Dv, device=dev, dtype=state_dtype))
    # Checkpoints of sequences with no tokens: their initial state throughout.
    ckpt = h0.unsqueeze(1).expand(n_seq, J, H, Dk, Dv)
    if not seq:
        o = torch.zeros_like(v) if cu_seqlens is None else v.new_zeros(v.shape)
        return o, h0.clone(), ckpt.clone()
    cu_t = torch.tensor(cu, dtype=torch.int64, device=dev)
    # Pass 1: every segment's state from zero.
    _, local = _ops.fwd(q1, k1, v1, slope, float(scale), None, cu_t, False, True)
    # The state entering each segment: S_j = lambda^len_{j-1} S_{j-1} + local_{j-1}.
    log_lam = -(slope.to(dev, state_dtype) if slope is not None else torch.zeros(H, device=dev, dtype=state_dtype))
    seq_t = torch.tensor(seq, device=dev)
    idx_t = torch.tensor(idx, device=dev)
    decay = torch.exp(log_lam.view(1, H) * torch.tensor(lens, device=dev, dtype=state_dtype).view(-1, 1))
    enter = torch.empty_like(local)
    S = h0
    for j in range(max(idx) + 1):
        at = (idx_t == j).nonzero().squeeze(1)   # segment j of the sequences that have one
        rows = seq_t[at]
        enter = enter.index_copy(0, at, S[rows])
        nxt = decay[at].view(-1, H, 1, 1) * S[rows] + local[at]
        S = S.index_copy(0, rows, nxt)
    # Pass 2: outputs and each segment's exact end state from the state entering it.
    o1, ends = _ops.fwd(q1, k1, v1, slope, float(scale), enter, cu_t, False, True)
    o = o1.reshape(v.shape) if cu_seqlens is None else o1
    kept = (idx_t < J).nonzero().squeeze(1)  # segments past J (max_seqlen too small) keep no checkpoint
    flat = ckpt.reshape(n_seq * J, H, Dk, Dv).index_copy(0, (seq_t * J + idx_t)[kept], ends[kept])
    flat = flat.view(n_seq, J, H, Dk, Dv)
    # Each sequence's final state (its last segment's end), and past its last segment that state.
    nseg = [(L + Nc - 1) // Nc for L in lengths]
    last_seg = torch.tensor([sum(nseg[:n + 1]) - 1 for n in range(n_seq)], device=dev)
    last = torch.tensor(nseg, device=dev) - 1
    final = torch.where(last.view(-1, 1, 1, 1) >= 0, ends[last_seg.clamp_min(0)], h0)
    j_ar = torch.arange(J, device=dev)
    ckpt = torch.where((j_ar.view(1, -1) > last.view(-1, 1)).view(n_seq, J, 1, 1, 1), final.unsqueeze(1), flat)
    return o, final, ckpt
