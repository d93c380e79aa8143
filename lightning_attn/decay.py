"""TNL's per-head decay rates (slopes), lambda_h = exp(-slope_h)."""
import math
from typing import List

import torch


def _alibi_slopes(n: int) -> List[float]:
    """ALiBi's geometric slopes 2^(-8(h+1)/n), interleaved when n is not a power of two."""
    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + _alibi_slopes(2 * closest)[0::2][: n - closest]


def tnl_slopes(num_heads: int, layer_idx: int, num_layers: int, kind: str = "released") -> torch.Tensor:
    """Decay slopes of one TNL layer, float32 ``[num_heads]``.

    kind="released" (default, TNL's released code):
        ``slope_h = 2^(-8(h+1)/H) * (1 - l/(L-1) + 1e-5)`` (ALiBi interleave when H is not a power of 2).
    kind="paper" (eq. 10 of the TransNormerLLM paper):
        ``slope_h = (8h/H) * (1 - l/L)``.

    Lower layers decay fast (local), upper layers slowly (global).

    Example:
        >>> tnl_slopes(8, layer_idx=0, num_layers=6)
    """
    if num_heads < 1 or num_layers < 1 or not 0 <= layer_idx < num_layers:
        raise ValueError(f"tnl_slopes needs num_heads >= 1 and 0 <= layer_idx < num_layers, got "
                         f"num_heads={num_heads}, layer_idx={layer_idx}, num_layers={num_layers}")
    if kind == "released":
        depth = 1 - layer_idx / (num_layers - 1) + 1e-5 if num_layers > 1 else 1.0
        return torch.tensor(_alibi_slopes(num_heads), dtype=torch.float32) * depth
    if kind == "paper":
        h = torch.arange(num_heads, dtype=torch.float32)
        return 8 * h / num_heads * (1 - layer_idx / num_layers)
    raise ValueError(f"tnl_slopes: kind must be 'released' or 'paper', got {kind!r}")
