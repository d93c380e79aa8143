"""The op contract beyond the numbers: opcheck, gradcheck, torch.compile, and bad-input errors."""
import pytest
import torch

import lightning_attn as la
from reference import rel_err

ops = torch.ops.lightning_attn


def fwd_samples(device, dtype=torch.float32):
    """(args, kwargs) for lightning_attn::fwd covering its options."""
    def t(*shape, scale=1.0):
        return (torch.randn(*shape, device=device) * scale).to(dtype)
    H, Dk, Dv = 2, 16, 8
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    slope = torch.rand(H, device=device, dtype=state_dtype)
    h0 = torch.randn(3, H, Dk, Dv, device=device, dtype=state_dtype)
    cu = torch.tensor([0, 5, 6, 19], device=device, dtype=torch.int32)
    return [
        (t(2, 33, H, Dk), t(2, 33, H, Dk), t(2, 33, H, Dv), slope, 1.0, None, None, False, False),
        (t(2, 70, H, Dk), t(2, 70, H, Dk), t(2, 70, H, Dv), None, 0.5, h0[:2], None, False, True),
        (t(1, 19, H, Dk), t(1, 19, H, Dk), t(1, 19, H, Dv), slope, 1.0, h0, cu, False, True),
        (t(2, H, 9, Dk), t(2, H, 9, Dk), t(2, H, 9, Dv), slope, 1.0, h0[:2], None, True, True),
    ]


@pytest.mark.parametrize("i", range(4))
def test_opcheck_fwd(device, i):
    args = fwd_samples(device)[i]
    for x in args[:3]:
        x.requires_grad_()
    if args[5] is not None:
        args[5].requires_grad_()
    torch.library.opcheck(ops.fwd.default, args)


@pytest.mark.parametrize("i", range(4))
def test_opcheck_bwd(device, i):
    q, k, v, slope, scale, h0, cu, head_first, out_final = fwd_samples(device)[i]
    dfinal = torch.randn_like(h0) if (h0 is not None and out_final) else None
    torch.library.opcheck(ops.bwd.default, (torch.randn_like(v), q, k, v, slope, scale, h0, dfinal, cu, head_first))


def test_opcheck_decode(device):
    q, k, v = torch.randn(3, 2, 16, device=device), torch.randn(3, 2, 16, device=device), torch.randn(3, 2, 8, device=device)
    state = torch.randn(3, 2, 16, 8, device=device)
    torch.library.opcheck(ops.decode.default, (q, k, v, state, torch.rand(2, device=device), 1.0))
    torch.library.opcheck(ops.decode.default, (q, k, v, state, None, 0.5))


def test_opcheck_srms_norm(device):
    x = torch.randn(4, 7, 32, device=device, requires_grad=True)
    torch.library.opcheck(ops.srms_norm_fwd.default, (x, 1e-6))
    y, rstd = ops.srms_norm_fwd(x.detach(), 1e-6)
    torch.library.opcheck(ops.srms_norm_bwd.default, (torch.randn_like(x), x.detach(), rstd))


GRADCHECK_CASES = {  # (B, T, H, Dk, Dv, cu_seqlens, head_first); T = 70 crosses a 64-token chunk
    "plain": (2, 9, 2, 4, 3, None, False),
    "two-chunks": (1, 70, 1, 3, 2, None, False),
    "varlen": (1, 19, 2, 4, 3, [0, 5, 6, 19], False),
    "head-first": (2, 9, 2, 4, 3, None, True),
}


@pytest.mark.parametrize("case", GRADCHECK_CASES)
def test_gradcheck_float64(case):
    B, T, H, Dk, Dv, cu, head_first = GRADCHECK_CASES[case]
    shape = (lambda D: (B, H, T, D)) if head_first else (lambda D: (B, T, H, D))
    cu = torch.tensor(cu) if cu is not None else None
    N = len(cu) - 1 if cu is not None else B
    slope = torch.rand(H, dtype=torch.float64) * 0.3
    inputs = tuple(torch.randn(s, dtype=torch.float64, requires_grad=True)
                   for s in (shape(Dk), shape(Dk), shape(Dv), (N, H, Dk, Dv)))

    def fn(q, k, v, h0):
        return la.lightning_attn_func(q, k, v, slope, 0.7, h0, output_final_state=True,
                                      cu_seqlens=cu, head_first=head_first)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_srms_norm():
    x = torch.randn(3, 5, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: la.srms_norm(x, 1e-6), (x,))
    assert torch.autograd.gradgradcheck is not None  # second order is not claimed


def test_compile_fullgraph_forward_backward(device):
    """One compiled graph calls the forward and (through AOTAutograd) the backward op."""
    q, k, v, slope, _, h0, _, _, _ = fwd_samples(device)[1]
    slope = torch.rand(2, device=device)

    def loss_fn(q, k, v, h0):
        o, hT = la.lightning_attn_func(q, k, v, slope, 0.5, h0, output_final_state=True)
        return (o.square().sum() + hT.sin().sum())

    compiled = torch.compile(loss_fn, fullgraph=True, backend="aot_eager")
    leaves = [x.detach().requires_grad_() for x in (q, k, v, h0)]
    leaves_c = [x.detach().clone().requires_grad_() for x in leaves]
    loss = loss_fn(*leaves)
    loss_c = compiled(*leaves_c)
    loss.backward()
    loss_c.backward()
    assert rel_err(loss_c, loss) < 1e-6
    for a, b in zip(leaves, leaves_c):
        assert rel_err(b.grad, a.grad) < 1e-6


def test_compile_explicit_bwd_and_decode_no_graph_break(device):
    q, k, v, slope, scale, h0, cu, hf, _ = fwd_samples(device)[2]

    def step(q, k, v, do, state):
        dq, dk, dv, dh0 = ops.bwd(do, q, k, v, slope, scale, h0, None, cu, hf)
        o = la.lightning_attn_decode(q[0, :3], k[0, :3], v[0, :3], state, slope)
        return dq, dk, dv, dh0, o

    do = torch.randn_like(v)
    state, state_c = torch.randn(3, 2, 16, 8, device=device), None
    state_c = state.clone()
    ref = step(q, k, v, do, state)
    got = torch.compile(step, fullgraph=True, backend="aot_eager")(q, k, v, do, state_c)
    for a, b in zip(ref, got):
        assert rel_err(b, a) < 1e-6
    assert torch.equal(state, state_c)  # the in-place state update survives functionalization


class TinyLinearAttn(torch.nn.Module):
    def __init__(self, d=32, heads=2):
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.Linear(d, 3 * d, bias=False)
        self.out = torch.nn.Linear(d, d, bias=False)
        self.register_buffer("slope", la.tnl_slopes(heads, 0, 2), persistent=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, C // self.heads).unbind(2)  # [B, T, H, D] views
        o, _ = la.lightning_attn_func(torch.nn.functional.silu(q), torch.nn.functional.silu(k), v, self.slope)
        return self.out(la.srms_norm(o.reshape(B, T, C)))


def test_compile_module_inductor_matches_eager():
    model = TinyLinearAttn()
    x = torch.randn(2, 40, 32)
    compiled = torch.compile(model, fullgraph=True)
    y, y_c = model(x), compiled(x)
    assert rel_err(y_c, y) < 1e-5
    y.sum().backward()
    g = model.qkv.weight.grad.clone()
    model.zero_grad()
    compiled(x).sum().backward()
    assert rel_err(model.qkv.weight.grad, g) < 1e-5


# ----------------------------------------------------------------------------- bad input


# The table of bad inputs, each run eager, under fake tensors and compiled: test_bad_input.py.


def test_errors_raise_before_any_output_is_touched():
    """A failed call leaves an in-place state unchanged (checks run before kernels)."""
    state = torch.randn(2, 3, 8, 4)
    before = state.clone()
    with pytest.raises(ValueError, match="slope must have shape"):
        la.lightning_attn_decode(torch.randn(2, 3, 8), torch.randn(2, 3, 8), torch.randn(2, 3, 4), state,
                                 slope=torch.rand(5))
    assert torch.equal(state, before)


def test_runs_under_autocast(device):
    """An outer autocast must not re-cast the kernels' float32 block products."""
    q, k, v, slope, _, h0, _, _, _ = fwd_samples(device, torch.bfloat16)[1]
    slope = torch.rand(2, device=device)
    ref, _ = la.lightning_attn_func(q, k, v, slope, 1.0, h0)
    with torch.autocast(device_type=device, dtype=torch.bfloat16):
        o, _ = la.lightning_attn_func(q, k, v, slope, 1.0, h0)
        y = la.srms_norm(o)
    assert o.dtype == torch.bfloat16 and torch.equal(o, ref)
    assert y.dtype == torch.bfloat16
