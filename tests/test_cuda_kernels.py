"""CUDA kernels of lightning_attn against float64 references (GPU only; skipped without CUDA).

Covers the paths the CPU suite cannot reach: the sequence split (pass 1, scan, pass 2)
of small batches, padding of odd head dims, the reversed sweeps of the backward, the
decode kernel, SRMSNorm, CUDA graphs, torch.compile, and poisoned (NaN) allocations.
"""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

import lightning_attn as la  # noqa: E402
from lightning_attn.graphs import capture_graph  # noqa: E402
from reference import lightning_attn_chunked_ref, lightning_attn_ref, rel_err, srms_norm_ref  # noqa: E402

# Relative error bounds on random inputs. Inputs are rounded to the dtype before the
# reference sees them, so the bounds measure the kernel's own rounding: 16-bit copies
# of the masked scores and of the state fed to the tensor cores. float32 inputs are
# rounded to bfloat16 on their way to the tensor cores (docs/kernels.md), hence bf16 bounds.
TOL = {torch.float32: 1e-2, torch.float16: 4e-3, torch.bfloat16: 1e-2}
DEV = "cuda"


def make_inputs(B, T, H, Dk, Dv, dtype, decay=True, state=False, head_first=False, N=None,
                slope_scale=0.2):
    shape = (lambda D: (B, H, T, D)) if head_first else (lambda D: (B, T, H, D))
    q = (torch.randn(shape(Dk), device=DEV) * Dk ** -0.5).to(dtype)
    k = (torch.randn(shape(Dk), device=DEV) * 0.5).to(dtype)
    v = torch.randn(shape(Dv), device=DEV).to(dtype)
    slope = (torch.rand(H, device=DEV) * slope_scale + 0.001) if decay else None
    h0 = torch.randn(N or B, H, Dk, Dv, device=DEV) * 0.3 if state else None
    return q, k, v, slope, h0


# ----------------------------------------------------------------------------- forward

FWD_SHAPES = [(T, 64, 64) for T in (1, 2, 63, 64, 65, 1000, 4097)] + [
    (65, 16, 16), (130, 32, 100), (200, 100, 100), (257, 128, 128), (129, 256, 128), (100, 256, 256),
    (77, 128, 256)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("T,Dk,Dv", FWD_SHAPES, ids=lambda x: str(x))
def test_forward(T, Dk, Dv, dtype):
    for decay, state, head_first in [(True, True, False), (False, False, True)]:
        q, k, v, slope, h0 = make_inputs(2, T, 3, Dk, Dv, dtype, decay, state, head_first)
        o, hT = la.lightning_attn_func(q, k, v, slope, 0.7, h0, output_final_state=True, head_first=head_first)
        ro, rh = lightning_attn_ref(q, k, v, slope, 0.7, h0, head_first=head_first)
        assert o.shape == v.shape and o.dtype == dtype and hT.dtype == torch.float32
        assert torch.isfinite(o).all() and torch.isfinite(hT).all()
        assert rel_err(o, ro) < TOL[dtype], (decay, state, head_first)
        assert rel_err(hT, rh) < TOL[dtype], (decay, state, head_first)


@pytest.mark.parametrize("T", [1, 65, 3000, 20000])
def test_forward_split_and_long(T):
    """B * H = 2 (< one wave): the sequence split runs (except at T = 1, one chunk)."""
    q, k, v, slope, h0 = make_inputs(1, T, 2, 128, 128, torch.bfloat16, state=True, slope_scale=0.01)
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True)
    ro, rh = lightning_attn_chunked_ref(q, k, v, slope, 1.0, h0)
    assert rel_err(o, ro) < 1e-2 and rel_err(hT, rh) < 1e-2
    o2, _ = la.lightning_attn_func(q, k, v, None, 1.0, None)  # no decay, no state
    ro2, _ = lightning_attn_chunked_ref(q, k, v, None, 1.0, None)
    assert rel_err(o2, ro2) < 1e-2


def test_forward_million_tokens_slow_decay():
    """T = 2^20, B = 1, lambda near 1 (slopes ~1e-5): the state sums ~10^5 tokens."""
    T = 1 << 20
    q, k, v, _, _ = make_inputs(1, T, 2, 64, 64, torch.bfloat16, decay=False)
    slope = torch.tensor([1e-5, 1e-6], device=DEV)
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, None, output_final_state=True)
    ro, rh = lightning_attn_chunked_ref(q, k, v, slope, 1.0, None)
    assert rel_err(o, ro) < 1e-2 and rel_err(hT, rh) < 1e-2


@pytest.mark.parametrize("Dk,Dv", [(64, 48), (128, 128)])  # 128: the Hopper kernels on sm_90
def test_varlen(Dk, Dv):
    lens = [0, 1, 63, 64, 65, 300, 1]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV, dtype=torch.int32)
    T = int(cu[-1])
    q, k, v, slope, h0 = make_inputs(1, T, 3, Dk, Dv, torch.bfloat16, state=True, N=len(lens))
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True, cu_seqlens=cu)
    ro, rh = lightning_attn_ref(q, k, v, slope, 1.0, h0, cu_seqlens=cu)
    assert rel_err(o, ro) < 1e-2 and rel_err(hT, rh) < 1e-2
    # the same with int64 offsets and a long packed batch (split path)
    lens = [5000, 3, 9000]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV, dtype=torch.int64)
    q, k, v, slope, h0 = make_inputs(1, int(cu[-1]), 2, Dk, Dk, torch.bfloat16, state=True, N=3)
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True, cu_seqlens=cu)
    for n in range(3):
        a, b = int(cu[n]), int(cu[n + 1])
        ro, rh = lightning_attn_chunked_ref(q[:, a:b], k[:, a:b], v[:, a:b], slope, 1.0, h0[n:n + 1])
        assert rel_err(o[:, a:b], ro) < 1e-2 and rel_err(hT[n:n + 1], rh) < 1e-2


def test_bad_cu_seqlens_stay_in_bounds():
    """Offsets outside [0, T] are clamped on the GPU: no fault, finite outputs."""
    q, k, v, slope, _ = make_inputs(1, 100, 2, 64, 64, torch.bfloat16)
    cu = torch.tensor([-50, 40, 10**6], device=DEV, dtype=torch.int32)
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, None, output_final_state=True, cu_seqlens=cu)
    torch.cuda.synchronize()
    assert hT.shape == (2, 2, 64, 64) and torch.isfinite(hT).all()


def test_negative_slope_gives_nan():
    q, k, v, _, _ = make_inputs(1, 70, 2, 64, 64, torch.bfloat16)
    slope = torch.tensor([-0.1, 0.1], device=DEV)
    o, _ = la.lightning_attn_func(q, k, v, slope)
    assert torch.isnan(o[:, :, 0]).all() and torch.isfinite(o[:, :, 1]).all()


def test_float64_rejected():
    q = torch.randn(1, 4, 1, 8, device=DEV, dtype=torch.float64)
    with pytest.raises(ValueError, match="CPU only"):
        la.lightning_attn_func(q, q, q)


def test_cuda_matches_cpu_op():
    q, k, v, slope, h0 = make_inputs(2, 300, 3, 64, 32, torch.float32, state=True)
    o, hT = la.lightning_attn_func(q, k, v, slope, 0.5, h0, output_final_state=True)
    oc, hc = la.lightning_attn_func(q.cpu(), k.cpu(), v.cpu(), slope.cpu(), 0.5, h0.cpu(), output_final_state=True)
    assert rel_err(o.cpu(), oc) < 1e-2 and rel_err(hT.cpu(), hc) < 1e-2


# ----------------------------------------------------------------------------- backward

# Dk or Dv of 256 in 16 bits: 128-wide pieces of the Hopper kernels on sm_90 (sums over k pieces);
# Dk = Dv = 64 and 128 in 16 bits: the Hopper kernels whole
BWD_CASES = [(1, 64, 64), (65, 64, 64), (777, 64, 64), (1000, 64, 128), (130, 100, 32), (129, 256, 128), (300, 128, 128),
             (77, 128, 256), (200, 256, 256)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("T,Dk,Dv", BWD_CASES, ids=lambda x: str(x))
def test_backward(T, Dk, Dv, dtype):
    for decay, state, head_first in [(True, True, False), (False, False, True)]:
        q, k, v, slope, h0 = make_inputs(2, T, 3, Dk, Dv, dtype, decay, state, head_first)
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        h0l = h0.detach().requires_grad_() if state else None
        do = torch.randn_like(v)
        dh = torch.randn(2, 3, Dk, Dv, device=DEV)
        o, hT = la.lightning_attn_func(*leaves, slope, 0.7, h0l, output_final_state=True, head_first=head_first)
        grads = torch.autograd.grad((o * do).sum() + (hT * dh).sum(), leaves + ([h0l] if state else []))
        rl = [x.detach().double().requires_grad_() for x in (q, k, v)]
        rh0 = h0.detach().double().requires_grad_() if state else None
        ro, rhT = lightning_attn_ref(*rl, slope, 0.7, rh0, head_first=head_first)
        rgrads = torch.autograd.grad((ro * do.double()).sum() + (rhT * dh.double()).sum(), rl + ([rh0] if state else []))
        for name, g, rg in zip(["dq", "dk", "dv", "dh0"], grads, rgrads):
            assert g.dtype == (torch.float32 if name == "dh0" else dtype)
            assert rel_err(g, rg) < TOL[dtype], (name, decay, state, head_first)


@pytest.mark.parametrize("Dk,Dv", [(64, 64), (64, 128), (128, 128), (256, 128)])  # not (64, 128): Hopper on sm_90
def test_backward_varlen(Dk, Dv):
    lens = [0, 70, 1, 300]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV, dtype=torch.int32)
    q, k, v, slope, h0 = make_inputs(1, int(cu[-1]), 2, Dk, Dv, torch.bfloat16, state=True, N=len(lens))
    leaves = [x.detach().requires_grad_() for x in (q, k, v, h0)]
    do, dh = torch.randn_like(v), torch.randn_like(h0)
    o, hT = la.lightning_attn_func(*leaves[:3], slope, 0.5, leaves[3], output_final_state=True, cu_seqlens=cu)
    grads = torch.autograd.grad((o * do).sum() + (hT * dh).sum(), leaves)
    rl = [x.detach().double().requires_grad_() for x in (q, k, v, h0)]
    ro, rhT = lightning_attn_ref(*rl[:3], slope, 0.5, rl[3], cu_seqlens=cu)
    rgrads = torch.autograd.grad((ro * do.double()).sum() + (rhT * dh.double()).sum(), rl)
    for name, g, rg in zip(["dq", "dk", "dv", "dh0"], grads, rgrads):
        assert rel_err(g, rg) < 1e-2, name


@pytest.mark.parametrize("D,state", [(64, True), (128, False)])
def test_backward_split(D, state):
    """B * H = 2: the dq, dk, dv sweeps all take the sequence split. Without an initial
    state (no dh0) and without a final state, pass 1 skips the last segment of each sweep."""
    T = 5000
    q, k, v, slope, h0 = make_inputs(1, T, 2, D, D, torch.bfloat16, state=state, slope_scale=0.02)
    do = torch.randn_like(v)
    if state:
        leaves = [x.detach().requires_grad_() for x in (q, k, v, h0)]
        dh = torch.randn_like(h0)
        o, hT = la.lightning_attn_func(*leaves[:3], slope, 1.0, leaves[3], output_final_state=True)
        grads = torch.autograd.grad((o * do).sum() + (hT * dh).sum(), leaves)
    else:
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        o, _ = la.lightning_attn_func(*leaves, slope, 1.0)
        grads = torch.autograd.grad((o * do).sum(), leaves)
    rl = [x.detach().double().requires_grad_() for x in leaves]
    ro, rhT = lightning_attn_chunked_ref(rl[0], rl[1], rl[2], slope, 1.0, rl[3] if state else None)
    loss = (ro * do.double()).sum() + ((rhT * dh.double()).sum() if state else 0)
    rgrads = torch.autograd.grad(loss, rl)
    assert rel_err(o, ro) < 1e-2
    for name, g, rg in zip(["dq", "dk", "dv", "dh0"], grads, rgrads):
        assert torch.isfinite(g).all() and rel_err(g, rg) < 1e-2, name


@pytest.mark.parametrize("head_first,state", [(False, True), (True, False)])
def test_split_states_in_output_rows(head_first, state, monkeypatch):
    """B x H = SMs / 2, T = 4096: two segments of four 512-token sub-segments, so the split
    keeps its segment states in the rows of o (forward), dq and dk (backward, reversed time for
    dk) instead of a workspace. The same bits as with the workspace (kernel_options(states_in_output_rows=False)),
    float64-accurate, and no memory beyond the outputs in forward and backward."""
    B, T, H, D = 2, 4096, torch.cuda.get_device_properties(0).multi_processor_count // 4, 128
    q, k, v, slope, h0 = make_inputs(B, T, H, D, D, torch.bfloat16, state=state, head_first=head_first,
                                     slope_scale=0.02)
    do = torch.randn_like(v)
    dh = torch.randn_like(h0) if state else None

    def run():
        leaves = [x.detach().requires_grad_() for x in (q, k, v) + ((h0,) if state else ())]
        o, hT = la.lightning_attn_func(*leaves[:3], slope, 1.0, leaves[3] if state else None,
                                       output_final_state=state, head_first=head_first)
        loss = (o * do).sum() + ((hT * dh).sum() if state else 0)
        return [o.detach(), hT] + list(torch.autograd.grad(loss, leaves))

    def fwd():
        return la.lightning_attn_func(q, k, v, slope, 1.0, head_first=head_first)[0]

    def fwd_bwd():
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        o = la.lightning_attn_func(*leaves, slope, 1.0, head_first=head_first)[0]
        return [o] + list(torch.autograd.grad(o, leaves, do))

    def extra_bytes(fn):  # peak allocated during fn, outputs included
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        del out
        return torch.cuda.max_memory_allocated() - before

    o_bytes = v.numel() * v.element_size()
    in_rows = run()
    rows_fwd, rows_fb = extra_bytes(fwd), extra_bytes(fwd_bwd)
    with la.kernel_options(states_in_output_rows=False):
        in_ws = run()
        ws_fwd, ws_fb = extra_bytes(fwd), extra_bytes(fwd_bwd)
    for name, a, b in zip(["o", "hT", "dq", "dk", "dv", "dh0"], in_rows, in_ws):
        assert (a is None and b is None) or torch.equal(a, b), name
    assert rows_fwd == o_bytes < ws_fwd, (rows_fwd, o_bytes, ws_fwd)  # o only
    assert rows_fb == 4 * o_bytes < ws_fb, (rows_fb, o_bytes, ws_fb)  # o, dq, dk, dv only
    if not head_first:
        ro, rhT = lightning_attn_chunked_ref(q, k, v, slope, 1.0, h0)
        assert rel_err(in_rows[0], ro) < 1e-2 and rel_err(in_rows[1], rhT) < 1e-2


TMA_VARIANTS = {"tma": {}, "rowstores": {"tma_stores": False}}


@pytest.mark.parametrize("variant", list(TMA_VARIANTS))
@pytest.mark.parametrize("B,T,H,state,dtype,Dk", [(2, 1, 3, True, torch.bfloat16, 128),
                                                  (2, 777, 3, True, torch.float16, 128),
                                                  (1, 8191, 2, False, torch.bfloat16, 128),
                                                  (4, 4096, 16, True, torch.bfloat16, 128),
                                                  (2, 777, 3, True, torch.bfloat16, 256),
                                                  (1, 8191, 2, True, torch.float16, 256),
                                                  (2, 777, 3, True, torch.bfloat16, 64),
                                                  (1, 8191, 2, False, torch.float16, 64)])
def test_tma_loads_match_cp_async(B, T, H, state, dtype, Dk, variant, monkeypatch):
    """The forward-time Hopper kernel loads its tiles by TMA (one thread, mbarriers), and it and
    the dk/dv sweep store their output rows by stmatrix + TMA where the operands allow;
    kernel_options(tma_loads=False) keeps cp.async and 4-byte stores. Same arithmetic, so the same bits:
    partial chunks (zero-filled past T on load; stores dropped past T, and before time 0 in the
    reversed dk/dv sweep), the split (T = 8191 at B x H = 2, states in the output rows), B > 1;
    also with TMA loads but row stores (tma_stores=False). Dk = 256: the second
    128-wide piece adds into o (and dq) in the kernel, its o + result stored by TMA too.
    Dk = Dv = 64: the one-warpgroup instance of the same kernel."""
    q, k, v, slope, h0 = make_inputs(B, T, H, Dk, 64 if Dk == 64 else 128, dtype, state=state)
    leaves = [x.requires_grad_() for x in (q, k, v)]
    do = torch.randn_like(v)

    def run():
        o, hT = la.lightning_attn_func(*leaves, slope, 1.0, h0, output_final_state=True)
        return [o.detach(), hT] + list(torch.autograd.grad(o, leaves, do))

    with la.kernel_options(**TMA_VARIANTS[variant]):
        tma = run()
    with la.kernel_options(tma_loads=False):
        ref = run()
    for name, a, b in zip(["o", "hT", "dq", "dk", "dv"], tma, ref):
        assert torch.equal(a, b), name
    ro, rh = lightning_attn_ref(q.detach(), k.detach(), v.detach(), slope, 1.0, h0)
    assert not tma[0].isnan().any() and rel_err(tma[0], ro) < 1e-2 and rel_err(tma[1], rh) < 1e-2


# ----------------------------------------------------------------------------- decode


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("Dk,Dv", [(128, 128), (64, 100), (256, 64), (16, 3)])
def test_decode(Dk, Dv, dtype):
    B, H = 3, 4
    q = torch.randn(B, H, Dk, device=DEV).to(dtype)
    k = torch.randn(B, H, Dk, device=DEV).to(dtype)
    v = torch.randn(B, H, Dv, device=DEV).to(dtype)
    slope = torch.rand(H, device=DEV)
    state = torch.randn(B, H, Dk, Dv, device=DEV)
    lam = torch.exp(-slope.double()).view(1, H, 1, 1)
    rs = lam * state.double() + k.double().unsqueeze(-1) * v.double().unsqueeze(-2)
    ro = 0.5 * torch.einsum("bhk,bhkv->bhv", q.double(), rs)
    o = la.lightning_attn_decode(q, k, v, state, slope, 0.5)
    assert o.dtype == dtype and o.shape == (B, H, Dv)
    assert rel_err(state, rs) < 1e-6
    assert rel_err(o, ro) < {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]


def test_decode_continues_prefill():
    q, k, v, slope, _ = make_inputs(2, 129, 4, 64, 64, torch.bfloat16)
    o, _ = la.lightning_attn_func(q, k, v, slope)
    _, state = la.lightning_attn_func(q[:, :128], k[:, :128], v[:, :128], slope, output_final_state=True)
    o_last = la.lightning_attn_decode(q[:, 128], k[:, 128], v[:, 128], state, slope)
    assert rel_err(o_last, o[:, 128]) < 1e-2


# ----------------------------------------------------------------------------- srms norm


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("D", [1, 100, 2048])
def test_srms_norm(D, dtype):
    x = (torch.randn(3, 5, D, device=DEV) * 3).to(dtype).requires_grad_()
    y = la.srms_norm(x, 1e-6)
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().double().requires_grad_()
    yr = srms_norm_ref(xr, 1e-6)
    (dxr,) = torch.autograd.grad(yr, xr, dy.double())
    tol = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}[dtype]
    assert y.dtype == dtype and rel_err(y, yr) < tol
    if D > 1:  # at D = 1, y = sign(x) and dx is pure rounding noise around 0
        assert rel_err(dx, dxr) < tol * 2
    else:
        assert dx.abs().max() < 1e-3


@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability() != (9, 0),
                    reason="the Hopper kernels run on sm_90 only")
@pytest.mark.parametrize("T,H,Dk", [(1000, 2, 128), (300, 136, 128), (300, 4, 256), (1000, 2, 64), (300, 136, 64)])
def test_hopper_kernels_taken(T, H, Dk):
    """On sm_90, 16-bit Dk = Dv = 128 calls run the wgmma kernels (forward, dq, dk/dv, and the
    split's state-only pass) rather than silently falling back to the portable ones; Dk = 256
    runs them in 128-wide pieces; Dk = Dv = 64 runs them too (forward-time and state-only sweeps,
    and the dk/dv sweep)."""
    q, k, v, slope, h0 = make_inputs(1, T, H, Dk, 64 if Dk == 64 else 128, torch.bfloat16, state=True)
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        o, _ = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True)
        o.float().sum().backward()
        torch.cuda.synchronize()
    names = [e.name for e in prof.events()]
    sm90 = [n for n in names if "sm90" in n]
    assert any("chunk_kernel_sm90" in n for n in sm90), names
    assert not any("chunk_kernel<" in n for n in names), names
    assert any("dkdv_kernel_sm90" in n for n in sm90) and not any("dkdv_kernel<" in n for n in names), names


# ----------------------------------------------------------------------------- graphs, compile


@pytest.mark.parametrize("D", [64, 128])  # 128: the Hopper kernels on sm_90
def test_cuda_graph_capture_and_replay(D):
    torch.utils.deterministic.fill_uninitialized_memory = False  # no fill kernels in the capture
    q, k, v, slope, h0 = make_inputs(1, 3000, 2, D, D, torch.bfloat16, state=True)
    qs, ks, vs = q.clone(), k.clone(), v.clone()
    state = torch.randn(1, 2, D, D, device=DEV)
    st = state.clone()

    def calls():
        o, hT = la.lightning_attn_func(qs, ks, vs, slope, 1.0, h0, output_final_state=True)
        return o, hT, la.lightning_attn_decode(qs[:, 0], ks[:, 0], vs[:, 0], st, slope)
    g, (o, hT, od) = capture_graph(calls, warmup=1)  # st is reset before each replay
    for _ in range(2):
        q2, k2, v2 = (torch.randn_like(x) for x in (q, k, v))
        qs.copy_(q2), ks.copy_(k2), vs.copy_(v2), st.copy_(state)
        g.replay()
        ro, rh = la.lightning_attn_func(q2, k2, v2, slope, 1.0, h0, output_final_state=True)
        ref_state = state.clone()
        rod = la.lightning_attn_decode(q2[:, 0], k2[:, 0], v2[:, 0], ref_state, slope)
        assert torch.equal(o, ro) and torch.equal(hT, rh)
        assert torch.equal(od, rod) and torch.equal(st, ref_state)


def test_torch_compile_no_graph_break():
    q, k, v, slope, h0 = make_inputs(2, 200, 2, 64, 64, torch.bfloat16, state=True)

    def f(q, k, v, h0):
        o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True)
        return la.srms_norm(o.float()).sum() + hT.sum()

    leaves = [x.detach().requires_grad_() for x in (q, k, v, h0)]
    compiled = torch.compile(f, mode="max-autotune", fullgraph=True)
    out = compiled(*leaves)
    out.backward()
    ref_leaves = [x.detach().requires_grad_() for x in (q, k, v, h0)]
    ref = f(*ref_leaves)
    ref.backward()
    assert torch.allclose(out, ref, rtol=1e-3)
    for a, b in zip(leaves, ref_leaves):
        assert rel_err(a.grad, b.grad) < 1e-3
