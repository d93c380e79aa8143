"""Sequence-parallel lightning attention in the LASP-2 manner (arXiv 2502.07563), with decay.

The sequence is split into W contiguous pieces of equal length T, one per rank of a process
group. Per head, with lambda = exp(-slope), rank r holds tokens [rT, (r+1)T) and:

    1. computes the state of its last piece-local segment as if it started from zero,
           L_r = sum_{t in tail} lambda^(T-1-t) k_t v_t^T                     [B, H, Dk, Dv]
    2. all-gathers the L_j of every rank (ONE collective; float32 [B, H, Dk, Dv], independent of T),
       overlapped with the chunked op on its own piece (intra-piece outputs, state from zero),
    3. forms its incoming state as the decay-weighted sum over the earlier ranks the sequence
       open at its first token spans (from j0, the rank where that sequence starts):
           S_in_r = sum_{j0 <= j < r} lambda^(T (r-1-j)) L_j
    4. adds the inter-piece part: o_t += scale * lambda^(t+1) S_in_r^T q_t (op is linear in its
       initial state), for the tokens of its first segment.

The backward mirrors it: each rank forms dS_in_r = scale * sum_t lambda^(t+1) q_t do_t^T, ONE
all-gather of the dS_in (overlapped with the op's backward on the piece), and the decay-weighted
suffix sum dL_j = sum_{r > j, j0(r) <= j} lambda^(T (r-1-j)) dS_in_r, which flows into k, v of the tail.

Packed documents (cu_seqlens, B = 1): every rank gets the GLOBAL offsets and derives its local
ones; a document that starts inside a rank's piece starts from its initial state (or zero) there,
and the state carried into rank r is the state of the document open at rank r's first token,
built only from the ranks that document spans. Without cu_seqlens, each of the B rows is one
sequence spanning all ranks.
"""
import bisect
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import Tensor

from ..ops import acc_dtype, lightning_attn_func

_ops = torch.ops.lightning_attn

__all__ = ["sequence_parallel_attn"]

_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


@dataclass(frozen=True)
class _Layout:
    """Where the sequences lie relative to one rank's piece (pure bookkeeping, no tensors).

    Local rows are the sequences of the op's local call: the B batch rows (dense) or the
    segments of the local cu_seqlens (packed). ``carry_rows`` of them (B dense, 1 packed) receive
    the incoming state over their first ``first_len`` tokens; the tail (tokens [tail_start, T)
    of the carried rows' last segment) is what this rank sends to the later ones.
    """
    error: Optional[str]                  # a set-up error found on this rank (raised on all, after the gather)
    local_cu: Optional[List[int]]         # local offsets (packed) or None (dense)
    carry: bool                           # the first local segment continues a sequence of earlier ranks
    first_len: int                        # tokens of the first local segment
    tail_start: int                       # start of the last segment (the tail sent to later ranks)
    tail_starts_here: bool                # the tail's sequence starts in this piece (its initial state folds in)
    tail_seq: int                         # global index of the tail's sequence (packed; 0 dense)
    init_rows: Tuple[Tuple[int, int], ...]   # (local row, global sequence) of sequences starting here
    final_rows: Tuple[Tuple[int, int], ...]  # (local row, global sequence) of sequences ending here
    span_start: Tuple[int, ...]           # per rank r: first rank of the sequence open at r's first token (r: none)


def _dense_layout(B: int, T: int, rank: int, world: int) -> _Layout:
    rows = tuple((b, b) for b in range(B))
    return _Layout(error=None, local_cu=None, carry=rank > 0, first_len=T, tail_start=0,
                   tail_starts_here=rank == 0, tail_seq=0, init_rows=rows if rank == 0 else (),
                   final_rows=rows if rank == world - 1 else (), span_start=(0,) * world)


def _packed_layout(cu: List[int], T: int, rank: int, world: int) -> _Layout:
    total = world * T
    if cu[0] != 0 or cu[-1] != total or any(b < a for a, b in zip(cu, cu[1:])):
        return _Layout(f"cu_seqlens must be the GLOBAL offsets of the packed sequence (0 ... "
                       f"{world} ranks x {T} local tokens = {total}), non-decreasing; got start {cu[0]}, "
                       f"end {cu[-1]}", None, False, 0, 0, False, 0, (), (), ())
    N = len(cu) - 1
    a, e = rank * T, rank * T + T

    def open_at(pos):  # the non-empty sequence containing token pos
        return bisect.bisect_right(cu, pos) - 1

    # Sequences this piece holds, in order: those with tokens in [a, e), plus the empty ones
    # positioned in [a, e) (or at the very end, on the last rank), which only carry a state.
    rows, init_rows, final_rows, local_cu = [], [], [], [0]
    for n in range(N):
        s, f = cu[n], cu[n + 1]
        empty_here = s == f and (a <= s < e or (s == total and e == total))
        if not (empty_here or (s < e and f > a)):
            continue
        i = len(rows)
        rows.append(n)
        local_cu.append(min(f, e) - a)
        if s >= a:
            init_rows.append((i, n))
        if empty_here or a <= f - 1 < e:
            final_rows.append((i, n))
    first = open_at(a)
    carry = cu[first] < a
    tail = open_at(e - 1)
    span_start = []
    for r in range(world):
        n = open_at(r * T)
        span_start.append(cu[n] // T if cu[n] < r * T else r)
    return _Layout(error=None, local_cu=local_cu, carry=carry,
                   first_len=min(cu[first + 1], e) - a, tail_start=max(cu[tail], a) - a,
                   tail_starts_here=cu[tail] >= a, tail_seq=tail, init_rows=tuple(init_rows),
                   final_rows=tuple(final_rows), span_start=tuple(span_start))


def _decay_pow(slope: Optional[Tensor], n: Tensor, H: int, dtype, device) -> Tensor:
    """lambda_h ** n for every entry of n (float tensor of exponents) -> [..., H]."""
    if slope is None:
        return torch.ones(*n.shape, H, dtype=dtype, device=device)
    return torch.exp(-slope.to(device=device, dtype=dtype) * n.to(device=device, dtype=dtype)[..., None])


def _coefficients(slope, lay: _Layout, T: int, world: int, H: int, dtype, device) -> Tensor:
    """c[r, j, h] = lambda_h^(T (r-1-j)) where rank j's tail feeds rank r's incoming state, else 0."""
    r = torch.arange(world).view(-1, 1)
    j = torch.arange(world).view(1, -1)
    start = torch.tensor(lay.span_start).view(-1, 1)
    mask = (j < r) & (j >= start)
    expo = (T * (r - 1 - j)).clamp(min=0)
    return _decay_pow(slope, expo, H, dtype, device) * mask[..., None].to(device=device, dtype=dtype)


# Tokens per slice of the O(T Dk Dv) state products below: bounds their float32 temporaries
# (at 1M tokens over 8 ranks a float32 copy of one rank's k would be 1 GiB).
_CHUNK = 8192


def _slices(t0: int, t1: int):
    for a in range(t0, t1, _CHUNK):
        yield a, min(a + _CHUNK, t1)


def _tail_state(k: Tensor, v: Tensor, slope, P: int, sdt) -> Tensor:
    """sum over t in [P, T) of lambda^(T-1-t) k_t v_t^T -> ``[B, H, Dk, Dv]`` in sdt."""
    B, T, H, Dk = k.shape
    L = torch.zeros(B, H, Dk, v.shape[-1], dtype=sdt, device=k.device)
    for a, b in _slices(P, T):
        w = _decay_pow(slope, torch.arange(T - 1 - a, T - 1 - b, -1), H, sdt, k.device)  # [b-a, H]
        L += torch.einsum("bthk,bthv->bhkv", k[:, a:b].to(sdt) * w[:, :, None], v[:, a:b].to(sdt))
    return L


def _state_grad_into_kv(dk: Tensor, dv: Tensor, k: Tensor, v: Tensor, dL: Tensor, slope, P: int, sdt) -> None:
    """Backward of ``_tail_state``: dk_t += lambda^(T-1-t) dL v_t, dv_t += lambda^(T-1-t) dL^T k_t (in place)."""
    T, H = k.shape[1], k.shape[2]
    for a, b in _slices(P, T):
        w = _decay_pow(slope, torch.arange(T - 1 - a, T - 1 - b, -1), H, sdt, k.device)[:, :, None]
        dk[:, a:b] += (w * torch.einsum("bthv,bhkv->bthk", v[:, a:b].to(sdt), dL)).to(dk.dtype)
        dv[:, a:b] += (w * torch.einsum("bthk,bhkv->bthv", k[:, a:b].to(sdt), dL)).to(dv.dtype)


def _decayed(x: Tensor, slope, a: int, b: int, sdt) -> Tensor:
    """lambda^(t+1) x_t for t in [a, b), in sdt."""
    return x[:, a:b].to(sdt) * _decay_pow(slope, torch.arange(a + 1, b + 1), x.shape[2], sdt, x.device)[:, :, None]


class _SequenceParallelAttn(torch.autograd.Function):

    @staticmethod
    def forward(ctx, q, k, v, initial_state, slope, scale, group, lay, cu_local, output_final_state, n_seq):
        # the state math runs in float32 (float64 for float64 inputs) whatever the ambient autocast says
        with torch.autocast(q.device.type, enabled=False):
            return _SequenceParallelAttn._forward(ctx, q, k, v, initial_state, slope, scale, group, lay, cu_local,
                                                  output_final_state, n_seq)

    @staticmethod
    def backward(ctx, do, d_final):
        with torch.autocast(do.device.type, enabled=False):
            return _SequenceParallelAttn._backward(ctx, do, d_final)

    @staticmethod
    def _forward(ctx, q, k, v, initial_state, slope, scale, group, lay, cu_local, output_final_state, n_seq):
        q, k, v = q.detach(), k.detach(), v.detach()
        initial_state = initial_state.detach() if initial_state is not None else None
        B, T, H, Dk = q.shape
        Dv = v.shape[-1]
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        sdt = acc_dtype(q.dtype)
        dev = q.device
        Bc = B if lay.local_cu is None else 1
        P, F = lay.tail_start, lay.first_len

        # 1. the tail's state from zero (plus its initial state if it starts here); cheap, O(T Dk Dv)
        tail_init = None
        if lay.error is None:
            L = _tail_state(k, v, slope, P, sdt)
            if lay.tail_starts_here and initial_state is not None:
                rows = slice(None) if lay.local_cu is None else slice(lay.tail_seq, lay.tail_seq + 1)
                tail_init = initial_state[rows].to(sdt)
                L = L + _decay_pow(slope, torch.tensor(T - P), H, sdt, dev)[:, None, None] * tail_init
        else:
            L = torch.zeros(Bc, H, Dk, Dv, dtype=sdt, device=dev)
        # 2. one all-gather of the states, with (piece length, error flag) riding along so that a
        #    bad set-up on any rank is raised on every rank instead of hanging the others
        meta = torch.tensor([T, lay.error is not None], dtype=sdt, device=dev)
        send = torch.cat([L.reshape(-1), meta])
        recv = send.new_empty(world * send.numel())
        work = _all_gather_single(recv, send, group=group, async_op=True)
        # 3. intra-piece outputs (state from zero, or the initial state of sequences starting here),
        #    overlapped with the collective
        local_init = None
        if lay.error is None:
            local_init = _local_rows(initial_state, lay.init_rows, len(lay.local_cu) - 1 if lay.local_cu else B, sdt)
            need_final = output_final_state and len(lay.final_rows) > 0
            o, fin_local = _ops.fwd(q, k, v, slope, scale, local_init, cu_local, False, need_final)
        work.wait()
        recv = recv.view(world, -1)
        meta_all = recv[:, -2:]
        if bool(meta_all[:, 1].any()):
            bad = [i for i in range(world) if meta_all[i, 1] != 0]
            raise ValueError(f"sequence_parallel_attn: {lay.error or 'bad set-up'} (found on group rank(s) {bad}).")
        if bool((meta_all[:, 0] != T).any()):
            raise ValueError(f"sequence_parallel_attn: every rank must hold a piece of the same length; got local "
                             f"lengths {[int(x) for x in meta_all[:, 0].tolist()]} across the group.")
        G = recv[:, :-2].reshape(world, Bc, H, Dk, Dv)
        # 4. incoming state and the inter-piece part of the outputs
        coef = _coefficients(slope, lay, T, world, H, sdt, dev)  # [W, W, H]
        S_in = None
        if lay.carry:
            S_in = torch.einsum("jh,jbhkv->bhkv", coef[rank], G)
            for a, b in _slices(0, F):
                o[:, a:b] += (scale * torch.einsum("bthk,bhkv->bthv", _decayed(q, slope, a, b, sdt), S_in)).to(o.dtype)
        final = q.new_empty(0, dtype=sdt)
        if output_final_state:
            final = torch.zeros(n_seq, H, Dk, Dv, dtype=sdt, device=dev)
            lam_F = _decay_pow(slope, torch.tensor(F), H, sdt, dev)[:, None, None]
            for i, n in lay.final_rows:
                final[n] = fin_local[i]
                if S_in is not None and i < Bc:
                    final[n] += lam_F * S_in[i]
        ctx.save_for_backward(q, k, v, slope, local_init, cu_local, S_in, tail_init)
        ctx.meta = (scale, group, lay, coef, initial_state is not None, n_seq, output_final_state)
        if not output_final_state:
            ctx.mark_non_differentiable(final)
        return o, final

    @staticmethod
    def _backward(ctx, do, d_final):
        q, k, v, slope, local_init, cu_local, S_in, tail_init = ctx.saved_tensors
        scale, group, lay, coef, has_init, n_seq, output_final_state = ctx.meta
        B, T, H, Dk = q.shape
        Dv = v.shape[-1]
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        sdt = acc_dtype(q.dtype)
        dev = q.device
        Bc = B if lay.local_cu is None else 1
        P, F = lay.tail_start, lay.first_len
        n_local = len(lay.local_cu) - 1 if lay.local_cu is not None else B
        do = do.contiguous()

        # gradients of the final states this rank holds, per local row
        dfin_local = None
        if output_final_state and d_final is not None and len(lay.final_rows) > 0:
            dfin_local = torch.zeros(n_local, H, Dk, Dv, dtype=sdt, device=dev)
            for i, n in lay.final_rows:
                dfin_local[i] = d_final[n]
        # 1. gradient of the incoming state: from the outputs of the first segment and, if that
        #    sequence ends here, from its final state
        dS_in = torch.zeros(Bc, H, Dk, Dv, dtype=sdt, device=dev)
        if lay.carry:
            for a, b in _slices(0, F):
                dS_in += scale * torch.einsum("bthk,bthv->bhkv", _decayed(q, slope, a, b, sdt), do[:, a:b].to(sdt))
            if dfin_local is not None:
                dS_in += _decay_pow(slope, torch.tensor(F), H, sdt, dev)[:, None, None] * dfin_local[:Bc]
        # 2. one all-gather of the incoming-state gradients, overlapped with the op's backward
        recv = dS_in.new_empty(world * dS_in.numel())
        work = _all_gather_single(recv, dS_in.reshape(-1), group=group, async_op=True)
        dq, dk, dv, dh0 = _ops.bwd(do, q, k, v, slope, scale, local_init, dfin_local, cu_local, False)
        if lay.carry:
            for a, b in _slices(0, F):  # o_t += scale lambda^(t+1) S_in^T q_t  =>  dq_t += scale lambda^(t+1) S_in do_t
                dq[:, a:b] += (scale * torch.einsum("bthv,bhkv->bthk", _decayed(do, slope, a, b, sdt), S_in)
                               ).to(dq.dtype)
        work.wait()
        # 3. decay-weighted suffix sum: what the later ranks' incoming states owe this rank's tail
        dL = torch.einsum("rh,rbhkv->bhkv", coef[:, rank], recv.view(world, Bc, H, Dk, Dv))
        _state_grad_into_kv(dk, dv, k, v, dL, slope, P, sdt)
        d_init = None
        if has_init and ctx.needs_input_grad[3]:
            d_init = torch.zeros(n_seq, H, Dk, Dv, dtype=sdt, device=dev)
            for i, n in lay.init_rows:
                d_init[n] = dh0[i]
            if tail_init is not None:
                rows = slice(None) if lay.local_cu is None else slice(lay.tail_seq, lay.tail_seq + 1)
                d_init[rows] += _decay_pow(slope, torch.tensor(T - P), H, sdt, dev)[:, None, None] * dL
        return dq, dk, dv, d_init, None, None, None, None, None, None, None


def _local_rows(initial_state: Optional[Tensor], init_rows, n_local: int, dtype) -> Optional[Tensor]:
    """Initial states for the op's local rows: the given state for sequences starting here, else zero."""
    if initial_state is None or not init_rows:
        return None
    H, Dk, Dv = initial_state.shape[1:]
    rows = torch.zeros(n_local, H, Dk, Dv, dtype=dtype, device=initial_state.device)
    for i, n in init_rows:
        rows[i] = initial_state[n]
    return rows


@torch.compiler.disable  # Python bookkeeping and collectives: a graph break, the rest of a model still compiles
def sequence_parallel_attn(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    slope: Optional[Tensor] = None,
    scale: float = 1.0,
    group: Optional[dist.ProcessGroup] = None,
    cu_seqlens: Optional[Tensor] = None,
    initial_state: Optional[Tensor] = None,
    output_final_state: bool = False,
) -> Tuple[Tensor, Optional[Tensor]]:
    """Lightning attention over a sequence split across the ranks of ``group`` (LASP-2 with decay).

    Same math as ``lightning_attn_func`` on the whole sequence (``S_t = lambda S_{t-1} + k_t v_t^T;
    o_t = scale S_t^T q_t``), each rank holding one contiguous piece of T tokens, rank order =
    sequence order. Communication: one all-gather of float32 ``[B, H, Dk, Dv]`` states forward, one
    backward, independent of T. Every rank of the group must call it (same shapes, same layer order).

    Args:
        q, k: this rank's piece ``[B, T, H, Dk]``; v: ``[B, T, H, Dv]``; T equal on every rank.
        slope: float32 ``[H]`` (lambda = exp(-slope)) or None. scale: output scale.
        group: the sequence-parallel process group (None: the default group).
        cu_seqlens: GLOBAL int offsets ``[N + 1]`` of N documents packed over all W*T tokens (B = 1),
            the same on every rank; documents may cross rank boundaries.
        initial_state: float32 ``[N, H, Dk, Dv]`` (N = B dense, N documents packed), the state before
            each sequence's first token; pass the same tensor on every rank. Used by the rank where
            the sequence starts (rank 0 for dense), whose gradient holds that sequence's rows (zeros
            elsewhere; a sum over the group gives the whole gradient).
        output_final_state: also return the float32 ``[N, H, Dk, Dv]`` states after each sequence's
            last token. Row n is held by the rank whose piece holds that token (the last rank for
            dense), zeros on the others: ``all_reduce(SUM)`` over the group gives it to every rank.

    Returns:
        ``(o, final_state)`` as ``lightning_attn_func`` returns them: o ``[B, T, H, Dv]`` (this rank's
        piece, q's dtype); final_state as above, or None without output_final_state.

    Example (2 ranks, each with half of a 2048-token sequence):
        >>> o, _ = sequence_parallel_attn(q_half, k_half, v_half, slope=tnl_slopes(8, 0, 12), group=sp_group)
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("sequence_parallel_attn needs torch.distributed initialised "
                           "(torch.distributed.init_process_group), or call lightning_attn_func instead.")
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"sequence_parallel_attn: q, k must be [B, T, H, Dk] and v [B, T, H, Dv] with the same "
                         f"B, T, H; got q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}.")
    B, T, H, _ = q.shape
    if T < 1:
        raise ValueError("sequence_parallel_attn: every rank's piece must hold at least one token.")
    if cu_seqlens is not None and B != 1:
        raise ValueError(f"sequence_parallel_attn: with cu_seqlens the documents are packed into B = 1, got B = {B}.")
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if rank < 0:
        raise ValueError("sequence_parallel_attn: this process is not a member of the given group.")
    if world == 1:
        o, final = lightning_attn_func(q, k, v, slope=slope, scale=scale, initial_state=initial_state,
                                       output_final_state=output_final_state, cu_seqlens=cu_seqlens)
        return o, final
    if cu_seqlens is None:
        lay, cu_local, n_seq = _dense_layout(B, T, rank, world), None, B
    else:
        cu = [int(x) for x in cu_seqlens.tolist()]
        lay, n_seq = _packed_layout(cu, T, rank, world), len(cu) - 1
        cu_local = (torch.tensor(lay.local_cu, dtype=cu_seqlens.dtype, device=q.device)
                    if lay.local_cu is not None else None)
    if initial_state is not None and tuple(initial_state.shape) != (n_seq, H, k.shape[3], v.shape[3]):
        raise ValueError(f"sequence_parallel_attn: initial_state must be [N, H, Dk, Dv] = "
                         f"{[n_seq, H, k.shape[3], v.shape[3]]} (N = the GLOBAL number of sequences), "
                         f"got {list(initial_state.shape)}.")
    o, final = _SequenceParallelAttn.apply(q, k, v, initial_state, slope, float(scale), group, lay, cu_local,
                                           output_final_state, n_seq)
    return o, (final if output_final_state else None)
