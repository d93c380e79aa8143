"""linear_cross_entropy (lightning_attn/loss.py) against cross_entropy over full logits. CPU."""
import pytest
import torch
import torch.nn.functional as F

from lightning_attn import linear_cross_entropy


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_matches_full_logits_loss_and_gradients(chunk):
    torch.manual_seed(0)
    h = torch.randn(2, 33, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 50, (2, 33))
    y[1, 3:9] = -100
    loss = linear_cross_entropy(h, w, y, chunk_size=chunk)
    ref = F.cross_entropy((h @ w.t()).reshape(-1, 50), y.reshape(-1))
    torch.testing.assert_close(loss, ref)
    dh, dw = torch.autograd.grad(loss * 3.0, (h, w))
    rh, rw = torch.autograd.grad(ref * 3.0, (h, w))
    torch.testing.assert_close(dh, rh)
    torch.testing.assert_close(dw, rw)


def test_gradcheck():
    torch.manual_seed(1)
    h = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(9, 6, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 8, -100, 3, 3])
    assert torch.autograd.gradcheck(lambda h, w: linear_cross_entropy(h, w, y, chunk_size=2), (h, w))


def test_bfloat16_autocast_close_to_float32(device):
    # on CUDA the per-chunk softmax runs compiled (dynamic shapes: the last chunk is shorter)
    torch.manual_seed(2)
    h = torch.randn(70, 32, device=device, requires_grad=True)
    w = (torch.randn(100, 32, device=device) * 0.1).requires_grad_()
    y = torch.randint(0, 100, (70,), device=device)
    y[:5] = -100
    with torch.autocast(device, dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, y, chunk_size=16)
    assert loss.dtype == torch.float32
    ref = F.cross_entropy(h @ w.t(), y)
    torch.testing.assert_close(loss, ref, atol=3e-2, rtol=1e-2)
    dh, dw = torch.autograd.grad(loss, (h, w))
    rh, rw = torch.autograd.grad(ref, (h, w))
    torch.testing.assert_close(dh, rh, atol=2e-3, rtol=5e-2)
    torch.testing.assert_close(dw, rw, atol=2e-3, rtol=5e-2)


def test_all_ignored_is_zero_and_no_grad_input_is_fine():
    h, w = torch.randn(4, 8), torch.randn(10, 8)
    assert linear_cross_entropy(h, w, torch.full((4,), -100)).item() == 0.0
    with torch.no_grad():
        torch.testing.assert_close(linear_cross_entropy(h, w, torch.arange(4)), F.cross_entropy(h @ w.t(), torch.arange(4)))


def test_bad_arguments_name_themselves():
    h, w = torch.randn(2, 3, 8), torch.randn(10, 8)
    with pytest.raises(ValueError, match="labels"):
        linear_cross_entropy(h, w, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        linear_cross_entropy(h, w, torch.zeros(2, 3, dtype=torch.long), chunk_size=0)
