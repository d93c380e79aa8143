"""The recurrent cache of a TNL model: per layer one float32 state, plus per-sequence positions.

A linear-attention layer summarises everything it has seen in a fixed-size state
``S [N, H, Dk, Dv]`` (N sequences), so generation needs no growing KV cache: the cache is
``num_layers`` states and one LongTensor ``offset [N]``, the number of tokens each sequence
has consumed (it feeds the LRPE positions of the first layer). Sequences of a batch may have
different lengths: each has its own offset.

Speculative decoding needs to feed tokens and later keep only a prefix of them per sequence.
Between ``begin_speculation`` and ``accept`` the attention layers hand their q, k, v to the
cache (``speculative_attend``), which records them; ``accept(n)`` then moves every layer's
state by exactly ``n[b]`` of the recorded tokens with one ``lightning_attn_decode_tokens``
launch per layer (``num_accepted``), so no per-token state is ever stored.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .ops import lightning_attn_decode_tokens


@dataclass
class _Speculation:
    advance: bool                      # states move with every fed token (a draft) or stay (a verify)
    offset: Tensor                     # offsets at begin_speculation
    saved: Optional[List[Tensor]]      # states at begin_speculation (advance only), restored by accept
    fed: List[List[Tuple[Tensor, Tensor, Tensor, Optional[Tensor]]]] = field(default_factory=list)


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
        self._spec: Optional[_Speculation] = None

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

    # ------------------------------------------------------------------ speculative decoding

    @property
    def speculating(self) -> bool:
        return self._spec is not None

    def begin_speculation(self, advance: bool) -> None:
        """Record the tokens fed from now on, to keep a prefix of them in ``accept``.

        advance=True (a draft model feeding one token per step): the states move with every
        token, so the next step sees it; ``accept`` restores them first. advance=False (the
        target verifying K tokens in one forward): the states stay as they are until ``accept``.
        The cache must hold every layer's state already (after a prefill).
        """
        if self.speculating:
            raise RuntimeError("TNLCache.begin_speculation: a speculation is already open; accept() it first.")
        if self.offset is None or any(s is None for s in self.states):
            raise RuntimeError("TNLCache.begin_speculation: the cache is empty; prefill the prompts first.")
        saved = [s.clone() for s in self.states] if advance else None
        self._spec = _Speculation(advance, self.offset.clone(), saved, [[] for _ in self.states])

    def speculative_attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, slope: Optional[Tensor]) -> Tensor:
        """Attention of ``T`` fed tokens ``q, k [N, T, H, Dk]``, ``v [N, T, H, Dv]`` from this
        layer's state, recording them; returns ``o [N, T, H, Dv]``."""
        spec = self._spec
        spec.fed[layer].append((q, k, v, slope))
        state = self.states[layer]
        if spec.advance:
            return lightning_attn_decode_tokens(q, k, v, state, slope)[0]
        stay = torch.zeros(q.shape[0], dtype=torch.int32, device=q.device)
        return lightning_attn_decode_tokens(q, k, v, state, slope, num_accepted=stay)[0]

    def accept(self, num_accepted: Tensor) -> None:
        """Keep the first ``num_accepted[b]`` (LongTensor or int32 ``[N]``, on the device) tokens
        fed to each sequence since ``begin_speculation``: states and offsets as if only those
        had been fed. One decode_tokens launch per layer; no host synchronisation."""
        spec, self._spec = self._spec, None
        if spec is None:
            raise RuntimeError("TNLCache.accept: no speculation is open; call begin_speculation() first.")
        n = num_accepted.to(device=spec.offset.device)
        for layer, fed in enumerate(spec.fed):
            if not fed:
                continue
            state = self.states[layer]
            if spec.advance:
                state.copy_(spec.saved[layer])
            q, k, v = (torch.cat([f[i] for f in fed], dim=1) for i in range(3))
            lightning_attn_decode_tokens(q, k, v, state, fed[0][3], num_accepted=n.to(torch.int32))
        self.offset = spec.offset + n.long()

    def nbytes(self) -> int:
        return sum(s.numel() * s.element_size() for s in self.states if s is not None)

    def __repr__(self) -> str:
        shape = next((tuple(s.shape) for s in self.states if s is not None), None)
        return f"TNLCache(num_layers={self.num_layers}, state_shape={shape}, offset={self.offset})"
