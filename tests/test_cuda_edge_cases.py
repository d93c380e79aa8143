"""GPU edge cases at the sizes where peer libraries have broken (GPU only; skipped without CUDA).

- a tensor above 2^31 elements: 32-bit index overflow (FLA issue 1082);
- B x H above 65,535: a grid dimension's block limit (FLA issues 1077, 1097);
- TNL training with activation checkpointing at 256K tokens (FLA issue 728);
- lambda exactly 1, and slopes so large that lambda^64 underflows to 0 (FLA issue 1187: NaN);
- no device memory kept across 1,000 calls.

Tolerances follow FlashAttention's rule (reference.tol_from_baseline): the op may be at most 3x as
far from the high-precision reference as plain PyTorch in the op's own dtype.
"""
import dataclasses

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

import lightning_attn as la  # noqa: E402
from reference import lightning_attn_chunked_ref, rel_err, tol_from_baseline  # noqa: E402

DEV = "cuda"
GiB = 1 << 30


def inputs(B, T, H, D, dtype, slope):
    q = (torch.randn(B, T, H, D, device=DEV) * D ** -0.5).to(dtype)
    k = (torch.randn(B, T, H, D, device=DEV) * 0.5).to(dtype)
    v = torch.randn(B, T, H, D, device=DEV).to(dtype)
    return q, k, v, slope.to(DEV)


def check_against_ref(o, grads, q, k, v, slope, do, ref_dtype=torch.float64, chunk=256, h0=None):
    """o and (dq, dk, dv) against the chunked reference in ref_dtype, with the bound from the
    same chunked computation in the precision the kernels compute in: q's dtype, and bfloat16
    for float32 inputs (the CUDA kernels round those to bfloat16 for the tensor cores)."""
    base_dtype = torch.bfloat16 if q.dtype == torch.float32 else q.dtype
    leaves = [x.detach().to(ref_dtype).requires_grad_() for x in (q, k, v)]
    ro, _ = lightning_attn_chunked_ref(*leaves, slope, 1.0, h0, chunk=chunk, dtype=ref_dtype)
    rgrads = torch.autograd.grad(ro, leaves, do.to(ref_dtype))
    low = [x.detach().to(base_dtype).requires_grad_() for x in (q, k, v)]
    bo, _ = lightning_attn_chunked_ref(*low, slope, 1.0, h0, chunk=chunk, dtype=base_dtype)
    bgrads = torch.autograd.grad(bo, low, do.to(base_dtype))
    assert rel_err(o, ro) <= tol_from_baseline(ro, bo, floor=1e-3), (rel_err(o, ro), rel_err(bo, ro))
    for name, g, r, b in zip("qkv", grads, rgrads, bgrads):
        assert rel_err(g, r) <= tol_from_baseline(r, b, floor=1e-3), (name, rel_err(g, r), rel_err(b, r))


def test_tensor_above_2_31_elements():
    """B = 1, T = 2^21, H = 16, D = 128 in bf16: 2^32 elements per tensor. The last head's
    rows sit past element 2^31; its whole sequence is checked against float32."""
    T, H, D = 1 << 21, 16, 128
    if torch.cuda.get_device_properties(0).total_memory < 76 * GiB:
        pytest.skip("needs ~70 GiB of GPU memory (8 tensors of 8 GiB)")
    slope = 2.0 ** (-8.0 * torch.arange(H, 0, -1) / H)   # the last head decays slowest: 2^-0.5..2^-8
    q, k, v, slope = inputs(1, T, H, D, torch.bfloat16, slope)
    assert q.numel() == 1 << 32
    do = torch.randn_like(v)
    leaves = [x.requires_grad_() for x in (q, k, v)]
    o, _ = la.lightning_attn_func(*leaves, slope)
    grads = torch.autograd.grad(o, leaves, do)
    h = H - 1
    last = lambda x: x[:, :, h:h + 1].detach().clone()  # noqa: E731
    o_h, g_h = last(o), [last(g) for g in grads]
    q_h, k_h, v_h, do_h = (last(x) for x in (q, k, v, do))
    assert torch.isfinite(o_h).all() and all(torch.isfinite(g).all() for g in g_h)
    del o, grads, leaves, q, k, v, do
    torch.cuda.empty_cache()
    check_against_ref(o_h, g_h, q_h, k_h, v_h, slope[h:h + 1], do_h, ref_dtype=torch.float32)
    # the rows past element 2^31 on their own (the last 4,096 tokens)
    ro, _ = lightning_attn_chunked_ref(q_h, k_h, v_h, slope[h:h + 1], dtype=torch.float32)
    assert rel_err(o_h[:, -4096:], ro[:, -4096:]) < 2e-2


def test_batch_times_heads_above_65535():
    """B x H = 67,200 blocks along one grid axis, forward, backward and decode."""
    B, T, H, D = 4200, 64, 16, 64
    slope = torch.linspace(0.01, 1.0, H)
    q, k, v, slope = inputs(B, T, H, D, torch.bfloat16, slope)
    do = torch.randn_like(v)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    o, _ = la.lightning_attn_func(*leaves, slope)
    grads = torch.autograd.grad(o, leaves, do)
    check_against_ref(o, grads, q, k, v, slope, do, chunk=64)
    # decode: one token per sequence onto a random state
    state = torch.randn(B, H, D, D, device=DEV)
    s64 = state.double()
    qd, kd, vd = q[:, 0], k[:, 0], v[:, 0]
    od = la.lightning_attn_decode(qd, kd, vd, state, slope=slope)
    s64 = torch.exp(-slope.double()).view(1, H, 1, 1) * s64 + kd.double().unsqueeze(-1) * vd.double().unsqueeze(-2)
    ref = torch.einsum("bhk,bhkv->bhv", qd.double(), s64)
    assert rel_err(state, s64) < 1e-5 and rel_err(od, ref) < 1e-2


def test_tnl_training_with_checkpointing_256k_tokens():
    """One training step of a small TNL on 256K tokens, every block checkpointed; gradients equal
    those of the same step without checkpointing."""
    T = 1 << 18
    cfg = la.TNLConfig(vocab_size=512, d_model=256, n_layers=2, n_heads=4, glu_dim=512, max_seq_len=T)
    torch.manual_seed(0)
    ids = torch.randint(0, cfg.vocab_size, (1, T + 1), device=DEV)
    grads = {}
    for ckpt in (True, False):
        torch.manual_seed(1)
        model = la.TransNormerLLM(dataclasses.replace(cfg, gradient_checkpointing=ckpt)).to(DEV)
        model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids[:, :-1], labels=ids[:, 1:], return_logits=False)
        out.loss.backward()
        assert torch.isfinite(out.loss)
        grads[ckpt] = {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}
        torch.cuda.synchronize()
    assert grads[True].keys() == grads[False].keys() and len(grads[True]) > 0
    for n in grads[True]:
        assert torch.isfinite(grads[True][n]).all(), n
        assert rel_err(grads[True][n], grads[False][n]) < 1e-3, n


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("slope_value", [0.0, 30.0, 1e4], ids=["lambda_1", "lambda64_underflow", "lambda_underflow"])
def test_decay_extremes(dtype, slope_value):
    """lambda = 1 exactly (slope 0: the state sums every token), and lambda^64 (slope 30) or lambda
    itself (slope 1e4) below float32's smallest normal: finite, and as close as PyTorch."""
    B, T, H, D = 2, 1000, 4, 64
    slope = torch.full((H,), slope_value)
    q, k, v, slope = inputs(B, T, H, D, dtype, slope)
    h0 = torch.randn(B, H, D, D, device=DEV) * 0.3
    do = torch.randn_like(v)
    leaves = [x.detach().requires_grad_() for x in (q, k, v)]
    o, hT = la.lightning_attn_func(*leaves, slope, 1.0, h0, output_final_state=True)
    grads = torch.autograd.grad(o, leaves, do)
    assert torch.isfinite(o).all() and torch.isfinite(hT).all() and all(torch.isfinite(g).all() for g in grads)
    check_against_ref(o, grads, q, k, v, slope, do, h0=h0)
    _, rh = lightning_attn_chunked_ref(q, k, v, slope, 1.0, h0)
    assert rel_err(hT, rh) < 1e-2


def test_no_device_memory_kept_over_1000_calls():
    """Forward, backward (split path: B x H = 2) and decode, 1,000 times each: the allocator holds
    exactly what it held before."""
    q, k, v, slope = inputs(1, 4096, 2, 64, torch.bfloat16, torch.tensor([0.1, 0.01]))
    do = torch.randn_like(v)
    state = torch.zeros(1, 2, 64, 64, device=DEV)

    def step():
        leaves = [x.detach().requires_grad_() for x in (q, k, v)]
        o, hT = la.lightning_attn_func(*leaves, slope, output_final_state=True)
        torch.autograd.grad(o, leaves, do)
        la.lightning_attn_decode(q[:, 0], k[:, 0], v[:, 0], state, slope=slope)

    step()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    for _ in range(1000):
        step()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() == before
    assert torch.isfinite(state).all()
