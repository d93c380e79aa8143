"""Bad input: one table of cases, each run in eager mode, under FakeTensorMode and in a compiled graph.

The rules live once, in csrc/checks.cpp: the CPU and CUDA kernels call them, and so do the Meta
kernels (csrc/meta) that fake tensors and torch.compile trace through. Each case below must
raise a ValueError naming the argument in all three modes. Rules that read values (slope >= 0,
cu_seqlens monotone and ending at T) need the data, which fake tensors do not hold: those cases
run eager and compiled (the compiled graph raises when it runs), not under FakeTensorMode.
"""
import re
from dataclasses import dataclass
from typing import Callable

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

import lightning_attn as la

ops = torch.ops.lightning_attn


def r(*shape, dtype=torch.float32, device="cpu"):
    return torch.randn(*shape, dtype=dtype, device=device)


def fwd(q=None, k=None, v=None, **kw):
    """lightning_attn_func on [2, 10, 3, 8] q/k and [2, 10, 3, 4] v, any of them replaced."""
    q = r(2, 10, 3, 8) if q is None else q
    k = r(2, 10, 3, 8) if k is None else k
    v = r(2, 10, 3, 4) if v is None else v
    return dict(q=q, k=k, v=v, **kw)


def packed(**kw):
    return fwd(r(1, 10, 3, 8), r(1, 10, 3, 8), r(1, 10, 3, 4), **kw)


def decode(state, slope=None):
    return dict(q=r(2, 3, 8), k=r(2, 3, 8), v=r(2, 3, 4), state=state, slope=slope)


def tokens(K=3, state=None, **kw):
    """decode_tokens on q/k [2, K, 3, 8], v [2, K, 3, 4] from a [2, 3, 8, 4] state, any replaced."""
    d = dict(q=r(2, K, 3, 8), k=r(2, K, 3, 8), v=r(2, K, 3, 4), state=torch.zeros(2, 3, 8, 4) if state is None else state)
    d.update(kw)
    return d


def pool(ids, state=None, **kw):
    """decode_tokens from slots ids (int32 unless a tensor is given) of a 5-slot pool."""
    ids = ids if isinstance(ids, torch.Tensor) else torch.tensor(ids, dtype=torch.int32)
    return tokens(state=torch.zeros(5, 3, 8, 4) if state is None else state, slot_ids=ids, **kw)


def prefill(ids, state=None, **kw):
    """lightning_attn_func into slots ids (int32 unless a tensor is given) of a 5-slot pool."""
    ids = ids if isinstance(ids, torch.Tensor) else torch.tensor(ids, dtype=torch.int32)
    return fwd(initial_state=torch.zeros(5, 3, 8, 4) if state is None else state, slot_ids=ids, **kw)


def call_tokens(q, k, v, state, slot_ids=None, num_accepted=None, output_states=False):
    return la.lightning_attn_decode_tokens(q, k, v, state, slot_ids=slot_ids, num_accepted=num_accepted,
                                           output_states=output_states)[0]


def call_fwd(q, k, v, **kw):
    return la.lightning_attn_func(q, k, v, **kw)[0]


def call_checkpoints(q, k, v, every=64, count=1, **kw):
    """The one-pass checkpoint op directly (lightning_attn_prefill takes any N)."""
    return ops.fwd_checkpoints(q, k, v, kw.get("slope"), 1.0, kw.get("initial_state"), None, False, every, count)[2]


def call_decode(q, k, v, state, slope, slot_ids=None):
    return la.lightning_attn_decode(q, k, v, state, slope=slope, slot_ids=slot_ids)


def call_bwd(do, q, k, v):
    return ops.bwd(do, q, k, v, None, 1.0, None, None, None, False)[0]


def call_srms_bwd(dy, x, rstd):
    return ops.srms_norm_bwd(dy, x, rstd)


@dataclass
class Case:
    id: str
    fn: Callable
    inputs: Callable[[], dict]   # fresh tensors for each mode
    match: str
    reads_values: bool = False   # the rule reads tensor data: not checkable on fake tensors
    # Under fake tensors torch raises first for some inputs (devices differing: FakeTensor's own
    # device check runs before any kernel), or for rules of lightning_attn_func itself (raised in
    # Python before any op: a fullgraph trace reports them as Dynamo's "observed exception",
    # which carries the ValueError's text); that error's text, in fake and compiled mode.
    traced_match: str = ""


CASES = [
    Case("q_rank", call_fwd, lambda: fwd(q=r(10, 3, 8)), "q must be a 4-D tensor"),
    Case("k_shape", call_fwd, lambda: fwd(k=r(2, 11, 3, 8)), "k must have q's shape"),
    Case("v_heads", call_fwd, lambda: fwd(v=r(2, 10, 4, 4)), "v must match q in B, T and H"),
    Case("v_batch", call_fwd, lambda: fwd(v=r(1, 10, 3, 4)), "v must match q in B, T and H"),
    Case("v_dtype", call_fwd, lambda: fwd(v=r(2, 10, 3, 4, dtype=torch.bfloat16)), "v must have q's dtype"),
    Case("int_dtype", call_fwd,
         lambda: fwd(*(torch.ones(2, 10, 3, d, dtype=torch.int32) for d in (8, 8, 4))),
         "q must be float32, float16 or bfloat16"),
    Case("k_device", call_fwd, lambda: fwd(k=r(2, 10, 3, 8, device="meta")), "k must be on the same device as q",
         traced_match="found (at least )?two (different )?devices"),
    Case("Dk_257", call_fwd, lambda: fwd(r(1, 2, 1, 257), r(1, 2, 1, 257), r(1, 2, 1, 4)), "Dk must be in"),
    Case("Dv_300", call_fwd, lambda: fwd(v=r(2, 10, 3, 300)), "Dv must be in"),
    Case("T_0", call_fwd, lambda: fwd(r(2, 0, 3, 8), r(2, 0, 3, 8), r(2, 0, 3, 4)), "q must have B, T, H >= 1"),
    Case("q_last_dim_stride", call_fwd, lambda: fwd(q=r(2, 10, 3, 16)[..., ::2]),
         "q must have a contiguous last dimension"),
    Case("v_last_dim_stride", call_fwd, lambda: fwd(v=r(2, 10, 4, 3).transpose(-1, -2)),
         "v must have a contiguous last dimension"),
    Case("slope_shape", call_fwd, lambda: fwd(slope=torch.rand(4)), r"slope must have shape \[H\]"),
    Case("slope_dtype", call_fwd, lambda: fwd(slope=torch.rand(3, dtype=torch.float16)), "slope must be float32"),
    Case("slope_negative", call_fwd, lambda: fwd(slope=torch.tensor([0.1, -0.2, 0.3])), "slope must be >= 0",
         reads_values=True),
    Case("initial_state_shape", call_fwd, lambda: fwd(initial_state=torch.zeros(2, 3, 4, 8)),
         r"initial_state must have shape \[N, H, Dk, Dv\]"),
    Case("initial_state_dtype", call_fwd,
         lambda: fwd(initial_state=torch.zeros(2, 3, 8, 4, dtype=torch.bfloat16)), "initial_state must be Float"),
    Case("cu_seqlens_dtype", call_fwd, lambda: packed(cu_seqlens=torch.tensor([0.0, 10.0])),
         "cu_seqlens must be int32 or int64"),
    Case("cu_seqlens_rank", call_fwd, lambda: packed(cu_seqlens=torch.tensor([10], dtype=torch.int32)),
         r"cu_seqlens must be 1-D \[N \+ 1\]"),
    Case("cu_seqlens_batch", call_fwd, lambda: fwd(cu_seqlens=torch.tensor([0, 4, 10], dtype=torch.int32)),
         "with cu_seqlens the batch must be packed into B = 1, got B = 2"),
    Case("cu_seqlens_state_rows", call_fwd,
         lambda: packed(cu_seqlens=torch.tensor([0, 4, 10], dtype=torch.int32), initial_state=torch.zeros(1, 3, 8, 4)),
         r"initial_state must have shape \[N, H, Dk, Dv\] = \[2, 3, 8, 4\]"),
    Case("cu_seqlens_decreasing", call_fwd, lambda: packed(cu_seqlens=torch.tensor([0, 6, 4, 10], dtype=torch.int32)),
         "cu_seqlens must be non-decreasing", reads_values=True),
    Case("cu_seqlens_end", call_fwd, lambda: packed(cu_seqlens=torch.tensor([0, 4, 9], dtype=torch.int32)),
         "cu_seqlens must end at the packed length T = 10", reads_values=True),
    Case("cu_seqlens_start", call_fwd, lambda: packed(cu_seqlens=torch.tensor([1, 4, 10], dtype=torch.int32)),
         "cu_seqlens must start at 0", reads_values=True),
    Case("bwd_do_shape", call_bwd, lambda: dict(do=r(2, 10, 3, 8), **fwd()), "do must have v's shape"),
    Case("bwd_do_dtype", call_bwd, lambda: dict(do=r(2, 10, 3, 4, dtype=torch.float16), **fwd()),
         "do must have q's dtype"),
    Case("decode_state_shape", call_decode, lambda: decode(torch.zeros(2, 3, 8, 8)),
         r"state must have shape \[B, H, Dk, Dv\]"),
    Case("decode_state_dtype", call_decode, lambda: decode(torch.zeros(2, 3, 8, 4, dtype=torch.float16)),
         "state must be Float"),
    Case("decode_state_contiguous", call_decode, lambda: decode(torch.zeros(2, 3, 4, 8).transpose(-1, -2)),
         "state must be contiguous"),
    Case("decode_slope_shape", call_decode, lambda: decode(torch.zeros(2, 3, 8, 4), torch.rand(5)),
         r"slope must have shape \[H\]"),
    Case("decode_q_rank", call_decode, lambda: dict(decode(torch.zeros(2, 3, 8, 4)), q=r(2, 3, 1, 8)),
         "q must be a 3-D tensor"),
    Case("tokens_K_0", call_tokens, lambda: tokens(K=0), r"K \(dim 1, tokens per sequence\) in \[1, 16\], got 0"),
    Case("tokens_K_17", call_tokens, lambda: tokens(K=17), r"in \[1, 16\], got 17"),
    Case("tokens_q_rank", call_tokens, lambda: tokens(q=r(2, 3, 8)), r"q must be a 4-D tensor \[B, K, H, D\]"),
    Case("tokens_v_tokens", call_tokens, lambda: tokens(v=r(2, 2, 3, 4)), "v must be .B, K, H, Dv. with q's B, K and H"),
    Case("tokens_state_shape", call_tokens, lambda: tokens(state=torch.zeros(2, 3, 8, 5)),
         r"state must have shape \[B, H, Dk, Dv\] = \[2, 3, 8, 4\]"),
    Case("pool_shape", call_tokens, lambda: pool([0, 1], state=torch.zeros(5, 3, 4, 4)),
         r"state must have shape \[num_slots, H, Dk, Dv\] = \[5, 3, 8, 4\]"),
    Case("slot_ids_dtype", call_tokens, lambda: pool(torch.tensor([0, 1])), "slot_ids must be int32"),
    Case("slot_ids_shape", call_tokens, lambda: pool([0, 1, 2]), r"slot_ids must have shape \[B\] = \[2\]"),
    Case("slot_ids_range", call_tokens, lambda: pool([0, 5]), r"slot_ids must be in \[-1, num_slots = 5\)",
         reads_values=True),
    Case("slot_ids_below", call_tokens, lambda: pool([-2, 1]), r"slot_ids must be in \[-1", reads_values=True),
    Case("slot_ids_distinct", call_tokens, lambda: pool([3, 3]), "slot_ids must be distinct", reads_values=True),
    Case("accepted_and_states", call_tokens,
         lambda: tokens(num_accepted=torch.tensor([1, 1]), output_states=True), "not both"),
    Case("accepted_dtype", call_tokens, lambda: tokens(num_accepted=torch.tensor([1.0, 1.0])),
         "num_accepted must be int32 or int64"),
    Case("accepted_range", call_tokens, lambda: tokens(num_accepted=torch.tensor([1, 4])),
         r"num_accepted must be in \[0, K = 3\]", reads_values=True),
    Case("decode_slot_ids_dtype", call_decode,
         lambda: dict(decode(torch.zeros(5, 3, 8, 4)), slot_ids=torch.tensor([0, 1])), "slot_ids must be int32"),
    Case("prefill_pool_shape", call_fwd, lambda: prefill([0, 1], state=torch.zeros(5, 3, 4, 4)),
         r"initial_state \(the state pool\) must have shape \[num_slots, H, Dk, Dv\] = \[5, 3, 8, 4\]"),
    Case("prefill_pool_dtype", call_fwd, lambda: prefill([0, 1], state=torch.zeros(5, 3, 8, 4, dtype=torch.float16)),
         r"initial_state \(the state pool\) must be Float"),
    Case("prefill_slot_ids_dtype", call_fwd, lambda: prefill(torch.tensor([0, 1])), "slot_ids must be int32"),
    Case("prefill_slot_ids_shape", call_fwd, lambda: prefill([0, 1, 2]), r"slot_ids must have shape \[N\] = \[2\]"),
    Case("prefill_slot_ids_range", call_fwd, lambda: prefill([0, 5]), r"slot_ids must be in \[-1, num_slots = 5\)",
         reads_values=True),
    Case("prefill_slot_ids_distinct", call_fwd, lambda: prefill([2, 2]), "slot_ids must be distinct",
         reads_values=True),
    Case("prefill_no_pool", call_fwd, lambda: fwd(slot_ids=torch.tensor([0, 1], dtype=torch.int32)),
         "slot_ids needs initial_state, the state pool", traced_match="slot_ids needs initial_state, the state pool"),
    Case("prefill_final_state", call_fwd, lambda: prefill([0, 1], output_final_state=True),
         "output_final_state must be False", traced_match="output_final_state must be False"),
    Case("checkpoint_every_granule", call_checkpoints, lambda: fwd(every=100),
         "checkpoint_every must be a positive multiple of 64, got 100"),
    Case("checkpoint_every_zero", call_checkpoints, lambda: fwd(every=0),
         "checkpoint_every must be a positive multiple of 64, got 0"),
    Case("num_checkpoints_negative", call_checkpoints, lambda: fwd(count=-1), "num_checkpoints must be >= 0, got -1"),
    Case("checkpoints_initial_state_shape", call_checkpoints, lambda: fwd(initial_state=torch.zeros(2, 3, 8, 5)),
         "initial_state must have shape"),
    Case("srms_norm_dtype", la.srms_norm, lambda: dict(x=torch.ones(4, 8, dtype=torch.int64)),
         "x must be float32, float16 or bfloat16"),
    Case("srms_norm_bwd_dy_shape", call_srms_bwd, lambda: dict(dy=r(4, 7), x=r(4, 8), rstd=r(4)),
         "dy must have x's shape"),
    Case("srms_norm_bwd_rstd_shape", call_srms_bwd, lambda: dict(dy=r(4, 8), x=r(4, 8), rstd=r(5)),
         r"rstd must have shape x.shape\[:-1\]"),
    Case("srms_norm_bwd_rstd_dtype", call_srms_bwd,
         lambda: dict(dy=r(4, 8, dtype=torch.bfloat16), x=r(4, 8, dtype=torch.bfloat16), rstd=r(4, dtype=torch.bfloat16)),
         "rstd must be Float"),
]


def _value_error(excinfo, match):
    """The ValueError raised by the checks, possibly wrapped by Dynamo's tracing errors."""
    e = excinfo.value
    seen = []
    while e is not None and e not in seen:
        seen.append(e)
        if isinstance(e, ValueError):
            break
        e = e.__cause__ or e.__context__
    assert isinstance(e, ValueError), f"no ValueError in {[type(x).__name__ for x in seen]}: {excinfo.value}"
    assert re.search(match, str(e)), f"{match!r} not in: {e}"


def run_case(case: Case, mode: str):
    inputs = case.inputs()
    if mode == "eager":
        return case.fn(**inputs)
    if mode == "fake":
        with FakeTensorMode(allow_non_fake_inputs=False) as m:
            return case.fn(**{k: (m.from_tensor(v) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()})
    torch._dynamo.reset()
    return torch.compile(case.fn, fullgraph=True, backend="aot_eager")(**inputs)


MODES = [(c, m) for c in CASES for m in ("eager", "fake", "compile") if not (c.reads_values and m == "fake")]


@pytest.mark.parametrize("case,mode", MODES, ids=[f"{c.id}-{m}" for c, m in MODES])
def test_bad_input_raises_value_error(case, mode):
    with pytest.raises(Exception) as excinfo:
        run_case(case, mode)
    if case.traced_match and mode != "eager":
        assert re.search(case.traced_match, str(excinfo.value)), excinfo.value
    else:
        _value_error(excinfo, case.match)


def test_table_cases_are_bad_only_in_the_named_argument():
    """Each case's valid neighbour runs: fwd()/packed()/decode() with nothing replaced pass all checks."""
    call_fwd(**fwd())
    call_fwd(**packed(cu_seqlens=torch.tensor([0, 4, 10], dtype=torch.int32), initial_state=torch.zeros(2, 3, 8, 4)))
    call_decode(**decode(torch.zeros(2, 3, 8, 4)))
    call_tokens(**tokens())
    call_fwd(**prefill([4, -1]))
    call_checkpoints(**fwd(every=128, count=0))
    call_tokens(**pool([4, -1], num_accepted=torch.tensor([3, 0])))
    call_tokens(**tokens(K=16, output_states=True))
    call_bwd(r(2, 10, 3, 4), **fwd())
    x = r(4, 8)
    y, rstd = ops.srms_norm_fwd(x, 1e-6)
    call_srms_bwd(torch.ones_like(y), x, rstd)
