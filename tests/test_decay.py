"""TNL decay schedules: both formulas of DESIGN.md."""
import math

import pytest
import torch

from lightning_attn import tnl_slopes


def test_released_schedule_power_of_two_heads():
    H, L = 8, 6
    for l in range(L):
        expected = [2 ** (-8 * (h + 1) / H) * (1 - l / (L - 1) + 1e-5) for h in range(H)]
        assert torch.allclose(tnl_slopes(H, l, L), torch.tensor(expected), rtol=1e-6)
    assert tnl_slopes(H, L - 1, L).max() < 1e-4  # the top layer barely decays


def test_released_schedule_interleaves_when_not_power_of_two():
    # ALiBi: the 8 slopes of 8 heads, then every other slope of 16 heads
    s = tnl_slopes(12, 0, 2) / (1 + 1e-5)
    eight = [2 ** (-(h + 1)) for h in range(8)]
    sixteen = [2 ** (-0.5 * (h + 1)) for h in range(16)]
    assert torch.allclose(s, torch.tensor(eight + sixteen[0::2][:4]), rtol=1e-6)


def test_paper_schedule():
    H, L = 16, 4
    for l in range(L):
        expected = [8 * h / H * (1 - l / L) for h in range(H)]
        assert torch.allclose(tnl_slopes(H, l, L, kind="paper"), torch.tensor(expected))


def test_slopes_are_valid_decays():
    for kind in ("released", "paper"):
        s = tnl_slopes(20, 3, 30, kind=kind)
        assert s.dtype == torch.float32 and s.shape == (20,) and (s >= 0).all()


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind must be"):
        tnl_slopes(8, 0, 2, kind="alibi")
    with pytest.raises(ValueError, match="layer_idx < num_layers"):
        tnl_slopes(8, 2, 2)
