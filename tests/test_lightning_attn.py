"""lightning_attn ops (fwd, bwd, decode) against the float64 recurrence, on every available device."""
import pytest
import torch

import lightning_attn as la
from reference import lightning_attn_ref, rel_err

# Relative-error bounds per dtype: float32 accumulates in float32 everywhere (CUDA may
# round products through tf32); float16/bfloat16 round inputs, outputs and the state copy
# fed to the tensor cores.
TOL = {
    ("cpu", torch.float32): 2e-5, ("cpu", torch.float16): 2e-3, ("cpu", torch.bfloat16): 8e-3,
    ("cuda", torch.float32): 1e-2, ("cuda", torch.float16): 3e-3, ("cuda", torch.bfloat16): 8e-3,
}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]

# (T, Dk, Dv): T = 1, 2, around the 64-token chunk, not a multiple of it, long; head dims
# small, odd, the TNL first-layer 256.
SHAPES = [(1, 16, 16), (2, 32, 64), (63, 64, 64), (64, 128, 128), (65, 100, 32),
          (1000, 64, 128), (257, 256, 128), (4097, 128, 64)]


def make_inputs(B, T, H, Dk, Dv, dtype, device, decay=True, state=False, head_first=False, N=None):
    shape = (lambda D: (B, H, T, D)) if head_first else (lambda D: (B, T, H, D))
    # Activations around unit scale; q scaled so outputs stay O(1) over long sequences.
    q = (torch.randn(shape(Dk), device=device) * Dk ** -0.5).to(dtype)
    k = (torch.randn(shape(Dk), device=device) * 0.5).to(dtype)
    v = torch.randn(shape(Dv), device=device).to(dtype)
    slope = (torch.rand(H, device=device) * 0.2 + 0.001) if decay else None
    h0 = torch.randn(N or B, H, Dk, Dv, device=device) if state else None
    return q, k, v, slope, h0


def ids(shape):
    return "T{}-Dk{}-Dv{}".format(*shape)


VARIANTS = {"decay-state": (True, True), "decay": (True, False), "state": (False, True), "plain": (False, False)}
# Every variant at every shape, except T > 1000: once per dtype (decay-state) to keep the CPU suite short.
FWD_CASES = [pytest.param(shape, *VARIANTS[name], id=f"{ids(shape)}-{name}")
             for shape in SHAPES for name in VARIANTS if shape[0] <= 1000 or name == "decay-state"]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape,decay,state", FWD_CASES)
def test_forward(device, shape, dtype, decay, state):
    T, Dk, Dv = shape
    q, k, v, slope, h0 = make_inputs(2, T, 3, Dk, Dv, dtype, device, decay, state)
    o, hT = la.lightning_attn_func(q, k, v, slope, 0.5, h0, output_final_state=True)
    ro, rh = lightning_attn_ref(q, k, v, slope, 0.5, h0)
    assert o.dtype == dtype and o.shape == v.shape and hT.dtype == torch.float32
    assert rel_err(o, ro) < TOL[device, dtype]
    assert rel_err(hT, rh) < TOL[device, dtype]


@pytest.mark.parametrize("head_first", [False, True], ids=["BTHD", "BHTD"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_head_first_layout(device, dtype, head_first):
    q, k, v, slope, h0 = make_inputs(2, 130, 4, 64, 32, dtype, device, state=True, head_first=head_first)
    o, _ = la.lightning_attn_func(q, k, v, slope, 1.0, h0, head_first=head_first)
    ro, _ = lightning_attn_ref(q, k, v, slope, 1.0, h0, head_first=head_first)
    assert o.shape == v.shape and o.is_contiguous()
    assert rel_err(o, ro) < TOL[device, dtype]


def test_strided_inputs(device):
    """Views of a fused qkv projection (strided T and H, last dim contiguous) need no copy."""
    B, T, H, D = 2, 77, 3, 32
    qkv = torch.randn(B, T, 3, H, D, device=device)
    q, k, v = qkv.unbind(2)
    assert not q.is_contiguous()
    slope = torch.rand(H, device=device) * 0.1
    o, _ = la.lightning_attn_func(q, k, v, slope)
    ro, _ = lightning_attn_ref(q, k, v, slope)
    assert rel_err(o, ro) < TOL[device, torch.float32]


def output_loss(o, hT, wo, wh):
    return (o.double() * wo).sum() + ((hT.double() * wh).sum() if hT is not None else 0)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1, 16, 16), (63, 64, 64), (65, 100, 32), (300, 128, 128),
                                   (130, 256, 64)], ids=ids)
@pytest.mark.parametrize("decay,state", [(True, True), (False, False), (True, False)],
                         ids=["decay-state", "plain", "decay"])
def test_backward(device, shape, dtype, decay, state):
    T, Dk, Dv = shape
    q, k, v, slope, h0 = make_inputs(2, T, 2, Dk, Dv, dtype, device, decay, state)
    leaves = [x.requires_grad_() for x in (q, k, v) + ((h0,) if state else ())]
    o, hT = la.lightning_attn_func(q, k, v, slope, 0.5, h0, output_final_state=True)
    wo, wh = torch.randn_like(o, dtype=torch.float64), torch.randn_like(hT, dtype=torch.float64)
    grads = torch.autograd.grad(output_loss(o, hT, wo, wh), leaves)
    ro, rh = lightning_attn_ref(q, k, v, slope, 0.5, h0)
    ref_grads = torch.autograd.grad(output_loss(ro, rh, wo, wh), leaves)
    for name, g, r in zip(["dq", "dk", "dv", "dh0"], grads, ref_grads):
        assert g.dtype == (torch.float32 if name == "dh0" else dtype)
        assert rel_err(g, r) < TOL[device, dtype], name


@pytest.mark.parametrize("head_first", [False, True], ids=["BTHD", "BHTD"])
def test_backward_head_first(device, head_first):
    q, k, v, slope, _ = make_inputs(1, 100, 2, 32, 48, torch.float32, device, head_first=head_first)
    for x in (q, k, v):
        x.requires_grad_()
    o, _ = la.lightning_attn_func(q, k, v, slope, head_first=head_first)
    w = torch.randn_like(o)
    grads = torch.autograd.grad((o * w).sum(), (q, k, v))
    ro, _ = lightning_attn_ref(q, k, v, slope, head_first=head_first)
    ref = torch.autograd.grad((ro * w.double()).sum(), (q, k, v))
    for g, r, x in zip(grads, ref, (q, k, v)):
        assert g.shape == x.shape and rel_err(g, r) < TOL[device, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_varlen_equals_separate_sequences(device, dtype):
    lens = [1, 63, 64, 130, 7, 200]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    T, H, Dk, Dv = sum(lens), 3, 64, 32
    q, k, v, slope, h0 = make_inputs(1, T, H, Dk, Dv, dtype, device, state=True, N=len(lens))
    leaves = [x.requires_grad_() for x in (q, k, v, h0)]
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True, cu_seqlens=cu)
    wo, wh = torch.randn_like(o), torch.randn_like(hT)
    grads = torch.autograd.grad((o.float() * wo).sum() + (hT * wh).sum(), leaves)
    for n, (t0, t1) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        sl = slice(t0, t1)
        qs, ks, vs = (x[:, sl].detach().requires_grad_() for x in (q, k, v))
        hs = h0[n:n + 1].detach().requires_grad_()
        os_, hs_T = la.lightning_attn_func(qs, ks, vs, slope, 1.0, hs, output_final_state=True)
        # the same kernel on one sequence: equal up to float32 summation order
        assert rel_err(o[:, sl], os_) < 1e-5 + TOL[device, dtype] * (dtype != torch.float32)
        assert rel_err(hT[n], hs_T[0]) < 1e-5
        g1 = torch.autograd.grad((os_.float() * wo[:, sl]).sum() + (hs_T * wh[n:n + 1]).sum(),
                                 (qs, ks, vs, hs))
        for g_all, g_one in zip((grads[0][:, sl], grads[1][:, sl], grads[2][:, sl], grads[3][n:n + 1]), g1):
            assert rel_err(g_all, g_one) < 1e-5 + TOL[device, dtype] * (dtype != torch.float32)


def test_varlen_matches_reference(device):
    cu = torch.tensor([0, 5, 69, 70, 200], dtype=torch.int64, device=device)
    q, k, v, slope, h0 = make_inputs(1, 200, 2, 32, 32, torch.float32, device, state=True, N=4)
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True, cu_seqlens=cu)
    ro, rh = lightning_attn_ref(q, k, v, slope, 1.0, h0, cu_seqlens=cu)
    assert rel_err(o, ro) < TOL[device, torch.float32] and rel_err(hT, rh) < TOL[device, torch.float32]


@pytest.mark.parametrize("split", [1, 64, 100])
def test_state_passing_split(device, split):
    """Running [0, split) then [split, T) with the carried state equals one call over [0, T)."""
    q, k, v, slope, h0 = make_inputs(2, 257, 4, 64, 64, torch.float32, device, state=True)
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True)
    o1, h1 = la.lightning_attn_func(q[:, :split], k[:, :split], v[:, :split], slope, 1.0, h0, True)
    o2, h2 = la.lightning_attn_func(q[:, split:], k[:, split:], v[:, split:], slope, 1.0, h1, True)
    # CPU: the same float32 sums in another order; CUDA: bf16 products are rounded differently
    tol = 1e-5 if device == "cpu" else TOL[device, torch.float32]
    assert rel_err(torch.cat([o1, o2], 1), o) < tol
    assert rel_err(h2, hT) < tol


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decode_steps_equal_chunked(device, dtype):
    B, T, H, Dk, Dv = 3, 70, 4, 32, 64
    q, k, v, slope, h0 = make_inputs(B, T, H, Dk, Dv, dtype, device, state=True)
    o, hT = la.lightning_attn_func(q, k, v, slope, 0.7, h0, output_final_state=True)
    state = h0.clone()
    steps = torch.stack([la.lightning_attn_decode(q[:, t], k[:, t], v[:, t], state, slope, 0.7)
                         for t in range(T)], dim=1)
    assert steps.dtype == dtype and steps.shape == o.shape
    assert rel_err(steps, o) < TOL[device, dtype]
    assert rel_err(state, hT) < (1e-5 if (device, dtype) == ("cpu", torch.float32) else TOL[device, dtype])


def test_decode_no_decay_matches_reference(device):
    q, k, v, _, h0 = make_inputs(2, 5, 3, 16, 16, torch.float32, device, decay=False, state=True)
    ro, rh = lightning_attn_ref(q, k, v, None, 1.0, h0)
    state = h0.clone()
    for t in range(5):
        o = la.lightning_attn_decode(q[:, t], k[:, t], v[:, t], state)
        assert rel_err(o, ro[:, t]) < TOL[device, torch.float32]
    assert rel_err(state, rh) < TOL[device, torch.float32]


@pytest.mark.slow
def test_long_sequence_slopes_near_zero(device):
    """lambda close to 1 over a long sequence: the state sums nearly every token."""
    T = 65536 if device == "cuda" else 16384
    q, k, v, _, _ = make_inputs(1, T, 2, 32, 32, torch.bfloat16, device)
    slope = torch.full((2,), 1e-6, device=device)
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, output_final_state=True)
    # reference by the float64 CPU op on the same (rounded) inputs, checked itself above
    ro, rh = la.lightning_attn_func(*(x.cpu().double() for x in (q, k, v)), slope.cpu().double(), 1.0,
                                    output_final_state=True)
    assert rel_err(o.cpu(), ro) < 8e-3 and rel_err(hT.cpu(), rh) < 5e-3
