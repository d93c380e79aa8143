"""lightning_attn_prefill: the state every N tokens equals the final state of split calls."""
import pytest
import torch

import lightning_attn as la
from conftest import DEVICES
from reference import lightning_attn_ref, rel_err


def make(B, T, H, Dk, Dv, dtype, device):
    q = (torch.randn(B, T, H, Dk, device=device) * Dk ** -0.5).to(dtype)
    k = (torch.randn(B, T, H, Dk, device=device) * 0.5).to(dtype)
    v = torch.randn(B, T, H, Dv, device=device).to(dtype)
    return q, k, v, torch.rand(H, device=device) * 0.2


def tol(device, dtype):
    """CPU float32 is exact to rounding; CUDA rounds float32 products through tf32 and feeds
    bfloat16 state copies to the tensor cores (the bounds of test_lightning_attn)."""
    if device == "cpu":
        return {torch.float32: 1e-5, torch.bfloat16: 1e-3}[dtype]
    return {torch.float32: 1e-2, torch.bfloat16: 8e-3}[dtype]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("T,N", [(1, 1), (37, 8), (64, 64), (100, 30), (300, 128)])
@pytest.mark.parametrize("with_h0", [False, True])
def test_dense_checkpoints_equal_split_calls(device, T, N, with_h0):
    B, H, D = 2, 3, 32
    q, k, v, slope = make(B, T, H, D, D, torch.float32, device)
    h0 = torch.randn(B, H, D, D, device=device) * 0.3 if with_h0 else None
    o, final, ckpt = la.lightning_attn_prefill(q, k, v, N, slope, 0.5, h0)
    J = -(-T // N)
    assert ckpt.shape == (B, J, H, D, D) and ckpt.dtype == torch.float32
    ro, rfinal = lightning_attn_ref(q, k, v, slope, 0.5, h0)
    eps = tol(device, torch.float32)
    assert rel_err(o, ro) < eps and rel_err(final, rfinal) < eps
    for j in range(J):
        t = min((j + 1) * N, T)
        _, split = la.lightning_attn_func(q[:, :t], k[:, :t], v[:, :t], slope, 0.5, h0, output_final_state=True)
        assert rel_err(ckpt[:, j], split) < eps, j


@pytest.mark.parametrize("device", DEVICES)
def test_varlen_checkpoints(device):
    lens = [5, 0, 17, 1, 32]
    T, H, D, N = sum(lens), 2, 16, 8
    q, k, v, slope = make(1, T, H, D, D, torch.bfloat16, device)
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), dtype=torch.int32, device=device)
    h0 = torch.randn(len(lens), H, D, D, device=device)
    o, final, ckpt = la.lightning_attn_prefill(q, k, v, N, slope, 1.0, h0, cu_seqlens=cu)
    ro, rfinal = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True, cu_seqlens=cu)
    eps = tol(device, torch.bfloat16)
    assert rel_err(o, ro) < 1e-2 and rel_err(final, rfinal) < eps
    J = -(-max(lens) // N)  # the longest sequence sizes the checkpoints
    assert ckpt.shape == (len(lens), J, H, D, D)
    for n, L in enumerate(lens):
        s = int(cu[n])
        for j in range(J):
            t = min((j + 1) * N, L)
            if t == 0:
                assert torch.equal(ckpt[n, j], h0[n])
                continue
            _, split = lightning_attn_ref(q[:, s:s + t], k[:, s:s + t], v[:, s:s + t], slope, 1.0, h0[n:n + 1])
            assert rel_err(ckpt[n, j], split[0]) < eps, (n, j)


def test_gradients_float64():
    q, k, v, slope = make(1, 11, 2, 3, 2, torch.float64, "cpu")
    h0 = torch.randn(1, 2, 3, 2, dtype=torch.float64)
    leaves = [x.requires_grad_() for x in (q, k, v, h0)]

    def f(q, k, v, h0):
        o, final, ckpt = la.lightning_attn_prefill(q, k, v, 4, slope, 1.0, h0)
        return o, final, ckpt

    torch.autograd.gradcheck(f, leaves)


def test_bad_checkpoint_every():
    q, k, v, slope = make(1, 4, 1, 2, 2, torch.float32, "cpu")
    with pytest.raises(ValueError, match="checkpoint_every must be an int >= 1, got 0"):
        la.lightning_attn_prefill(q, k, v, 0)
