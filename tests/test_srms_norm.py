"""SRMSNorm op (forward and backward) against the float64 formula."""
import pytest
import torch

import lightning_attn as la
from reference import rel_err, srms_norm_ref

TOL = {torch.float32: 1e-5, torch.float16: 1e-3, torch.bfloat16: 8e-3}


@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("shape", [(1, 2), (3, 7), (2, 5, 512), (4, 3, 1000), (2, 2, 4096)], ids=str)
def test_srms_norm_forward_backward(device, shape, dtype):
    x = (torch.randn(shape, device=device) * 3).to(dtype).requires_grad_()
    y = la.srms_norm(x, 1e-6)
    ref = srms_norm_ref(x.detach(), 1e-6)
    assert y.dtype == dtype and y.shape == x.shape
    assert rel_err(y, ref) < TOL[dtype]
    dy = torch.randn_like(y)
    (dx,) = torch.autograd.grad(y, x, dy)
    xr = x.detach().double().requires_grad_()
    (dx_ref,) = torch.autograd.grad(srms_norm_ref(xr, 1e-6), xr, dy.double())
    assert dx.dtype == dtype and rel_err(dx, dx_ref) < 2 * TOL[dtype]


def test_srms_norm_eps_dominates_tiny_rows(device):
    x = torch.full((2, 8), 1e-8, device=device)
    y = la.srms_norm(x, eps=1e-2)
    assert rel_err(y, srms_norm_ref(x, 1e-2)) < 1e-5


def test_srms_norm_bad_input():
    with pytest.raises(ValueError, match="x must be float32, float16 or bfloat16"):
        la.srms_norm(torch.ones(3, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="eps must be >= 0"):
        la.srms_norm(torch.ones(3, 4), eps=-1.0)
