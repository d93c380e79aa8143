"""The recurrent cache of a TNL model: per layer one float32 state, plus per-sequence positions.

A linear-attention layer summarises everything it has seen in a fixed-size state
``S [N, H, Dk, Dv]`` (N sequences), so generation needs no growing KV cache: the cache is
``num_layers`` states and one LongTensor ``offset [N]``, the number of tokens each sequence
has consumed (it feeds the LRPE positions of the first layer). Sequences of a batch may have
different lengths: each has its own offset.
"""
from typing import List, Optional

from torch import Tensor


class TNLCache:
    """Per-layer float32 states ``[N, H, Dk, Dv]`` (None before the first token) and offsets ``[N]``.

    Example:
        >>> cache = TNLCache(num_layers=6)
        >>> out = model(prompt_ids, cache=cache)          # prefill: states and offsets filled
        >>> out = model(next_ids[:, None], cache=cache)   # one decode step per call
    """

    def __init__(self, num_layers: int, offset: Optional[Tensor] = None):
        self.states: List[Optional[Tensor]] = [None] * num_layers
        self.offset: Optional[Tensor] = offset  # LongTensor [N]; None until the first forward sets it

    @property
    def num_layers(self) -> int:
        return len(self.states)

    @property
    def batch_size(self) -> Optional[int]:
        for s in self.states:
            if s is not None:
                return s.shape[0]
        return None if self.offset is None else self.offset.shape[0]

    def advance(self, num_tokens) -> None:
        """Add ``num_tokens`` (LongTensor ``[N]`` or int) to the offsets after a forward."""
        self.offset = self.offset + num_tokens

    def index_select(self, index: Tensor) -> "TNLCache":
        """A cache of the sequences ``index`` (LongTensor ``[M]``), e.g. to drop finished ones."""
        new = TNLCache(self.num_layers)
        new.states = [None if s is None else s.index_select(0, index.to(s.device)) for s in self.states]
        new.offset = None if self.offset is None else self.offset.index_select(0, index.to(self.offset.device))
        return new

    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.states if s is not None)

    def __repr__(self) -> str:
        shape = next((tuple(s.shape) for s in self.states if s is not None), None)
        return f"TNLCache(num_layers={self.num_layers}, state_shape={shape}, offset={self.offset})"
