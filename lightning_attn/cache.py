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

A serving engine keeps many requests' states in one pool instead (``TNLCache.pool``): per layer
``[num_slots, H, Dk, Dv]`` and one offset per slot; ``slot_ids [B]`` (int32, on the device) maps
the rows of each forward to slots, -1 for a row that holds no request. Decode steps read and
update the pool rows in place through the decode op's ``slot_ids`` (no gather or scatter), so a
fixed-shape step over all slots can be captured once in a CUDA graph while requests come and go;
a prefill starts from its slots' rows and writes its final states into them in place, through the
same ``slot_ids`` (``lightning_attn_func(..., slot_ids=...)``), also with no gather or scatter.

Prefix caching: with ``checkpoint_every = N`` set, every multi-token forward (a prefill) also
keeps each layer's state after every N of its tokens (``lightning_attn_prefill``) in
``checkpoints``; an engine stores those of a shared prefix and later seeds a slot with them
(``load_states``) and prefills only the rest of the prompt.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .ops import lightning_attn_decode, lightning_attn_decode_tokens, lightning_attn_func
from .prefill import lightning_attn_prefill


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
        self.slot_ids: Optional[Tensor] = None  # pool mode: int32 [B], the slot of each row (-1: none)
        self._spec: Optional[_Speculation] = None
        # prefix caching: set checkpoint_every = N to keep, per layer, the states after every N
        # tokens of each prefill, float32 [N_seq, ceil(L / N), H, Dk, Dv] (lightning_attn_prefill)
        self.checkpoint_every: Optional[int] = None
        self.checkpoints: List[Optional[Tensor]] = [None] * num_layers

    @classmethod
    def pool(cls, num_slots: int, state_shapes: List[Tuple[int, int, int]], device=None,
             dtype: torch.dtype = torch.float32) -> "TNLCache":
        """A state pool of ``num_slots`` sequences: zero states ``[num_slots, H, Dk, Dv]`` (float32;
        float64 for float64 models)
        for each layer's ``(H, Dk, Dv)`` in ``state_shapes`` and zero offsets ``[num_slots]``;
        choose the rows with ``use_slots``. ``TransNormerLLM.new_cache(num_slots=...)`` makes one.

        Example:
            >>> cache = model.new_cache(num_slots=64)
            >>> cache.use_slots(torch.tensor([5], dtype=torch.int32, device="cuda"))
            >>> logits = model(prompt[None], cache=cache).logits     # prefill into slot 5
            >>> cache.use_slots(rows)                                # int32 [64], -1 where free
            >>> logits = model(tokens[:, None], cache=cache).logits  # one step for every request
        """
        if num_slots < 1:
            raise ValueError(f"TNLCache.pool: num_slots must be at least 1, got {num_slots}.")
        c = cls(len(state_shapes), torch.zeros(num_slots, dtype=torch.long, device=device))
        c.states = [torch.zeros(num_slots, *shape, device=device, dtype=dtype) for shape in state_shapes]
        c.slot_ids = torch.full((num_slots,), -1, dtype=torch.int32, device=device)
        return c

    @property
    def is_pool(self) -> bool:
        return self.slot_ids is not None

    def use_slots(self, slot_ids: Tensor) -> None:
        """Pool mode: the next forwards' rows are the slots ``slot_ids`` (int32 ``[B]``, -1: a row
        without a request: skipped by decode steps; in a prefill it runs from zeros and keeps nothing).
        The cache reads the tensor itself: a captured graph keeps reading the one it was
        captured with, so change that tensor in place between replays."""
        if not self.is_pool:
            raise RuntimeError("TNLCache.use_slots: not a pool; make one with TNLCache.pool(...).")
        if slot_ids.dtype != torch.int32 or slot_ids.dim() != 1:
            raise ValueError(f"TNLCache.use_slots: slot_ids must be a 1-D int32 tensor, got {slot_ids.dtype} "
                             f"of shape {tuple(slot_ids.shape)}.")
        self.slot_ids = slot_ids.to(self.offset.device)

    def reset_slots(self, slots: Tensor) -> None:
        """Pool mode: zero the states and offsets of ``slots`` (LongTensor or int32), for new requests."""
        idx = slots.to(device=self.offset.device, dtype=torch.long)
        for s in self.states:
            s.index_fill_(0, idx, 0.0)
        self.offset.index_fill_(0, idx, 0)

    def load_states(self, slots: Tensor, states: List[Tensor], offset) -> None:
        """Pool mode: seed ``slots`` (LongTensor or int32 ``[M]``) with per-layer states
        (``states[layer]`` float ``[M, H, Dk, Dv]``, e.g. ``checkpoints[layer][:, j]`` of an
        earlier prefill) and the number of tokens they summarise (``offset``: int or ``[M]``), so
        a prompt that starts with a cached prefix is prefilled from there on."""
        if not self.is_pool:
            raise RuntimeError("TNLCache.load_states: not a pool; make one with TNLCache.pool(...).")
        if len(states) != self.num_layers:
            raise ValueError(f"TNLCache.load_states: states must hold one tensor per layer ({self.num_layers}), "
                             f"got {len(states)}.")
        idx = slots.to(device=self.offset.device, dtype=torch.long)
        for layer, (pool, s) in enumerate(zip(self.states, states)):
            if s.shape != (idx.numel(), *pool.shape[1:]):
                raise ValueError(f"TNLCache.load_states: states[{layer}] must have shape "
                                 f"{[idx.numel(), *pool.shape[1:]]}, got {list(s.shape)}.")
            pool.index_copy_(0, idx, s.to(pool.dtype))
        off = torch.as_tensor(offset, dtype=torch.long, device=self.offset.device).expand(idx.numel())
        self.offset.index_copy_(0, idx, off.contiguous())

    def prefill_with_checkpoints(self, layer: int, q: Tensor, k: Tensor, v: Tensor, slope: Optional[Tensor],
                                 cu_seqlens: Optional[Tensor]) -> Tensor:
        """A prefill of one layer that keeps its states every ``checkpoint_every`` tokens in
        ``checkpoints[layer]``; from and into the layer's state (or, in pool mode, the slots'
        rows: gathered, then written back for the rows with a slot, which reads slot_ids on the
        host). q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]`` -> o like v."""
        pool = self.states[layer]
        if self.is_pool:
            idx = self.slot_ids.long()
            live = idx >= 0
            init = pool.index_select(0, idx.clamp(min=0)) * live.view(-1, 1, 1, 1)
        else:
            init = pool
        o, final, self.checkpoints[layer] = lightning_attn_prefill(
            q, k, v, self.checkpoint_every, slope=slope, initial_state=init, cu_seqlens=cu_seqlens)
        if self.is_pool:
            pool.index_copy_(0, idx[live], final[live])
        else:
            self.states[layer] = final
        return o

    def batch_offset(self) -> Optional[Tensor]:
        """The position offset of each row of the next forward: LongTensor ``[B]``."""
        if not self.is_pool:
            return self.offset
        return self.offset.index_select(0, self.slot_ids.clamp(min=0).long())

    def attend(self, layer: int, q: Tensor, k: Tensor, v: Tensor, slope: Optional[Tensor],
               cu_seqlens: Optional[Tensor]) -> Tensor:
        """One layer's attention from and into this cache: q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]``
        -> o like v. Recorded draft or verify tokens while speculating; pool rows in pool mode;
        otherwise the layer's state (None: an empty cache), replaced by the final state. T == 1
        with a state is one decode step, in place; with ``checkpoint_every`` a prefill keeps
        checkpoints."""
        if self.speculating:
            return self.speculative_attend(layer, q, k, v, slope)
        if self.is_pool:
            return self.attend_pool(layer, q, k, v, slope, cu_seqlens)
        state = self.states[layer]  # float32 [N, H, Dk, Dv] or None
        if state is not None and q.shape[1] == 1 and cu_seqlens is None:
            return lightning_attn_decode(q[:, 0], k[:, 0], v[:, 0], state, slope)[:, None]
        if self.checkpoint_every is not None:
            return self.prefill_with_checkpoints(layer, q, k, v, slope, cu_seqlens)
        o, self.states[layer] = lightning_attn_func(q, k, v, slope=slope, initial_state=state,
                                                    output_final_state=True, cu_seqlens=cu_seqlens)
        return o

    def attend_pool(self, layer: int, q: Tensor, k: Tensor, v: Tensor, slope: Optional[Tensor],
                    cu_seqlens: Optional[Tensor]) -> Tensor:
        """Pool mode attention of one layer: q, k ``[B, T, H, Dk]``, v ``[B, T, H, Dv]`` -> o like v.
        T == 1: the decode op on the pool rows, in place. Otherwise a prefill from the slots'
        rows (one slot per sequence of cu_seqlens when given), its final states written into them."""
        pool = self.states[layer]
        if q.shape[1] == 1 and cu_seqlens is None:
            return lightning_attn_decode(q[:, 0], k[:, 0], v[:, 0], pool, slope, slot_ids=self.slot_ids)[:, None]
        if self.checkpoint_every is not None:
            return self.prefill_with_checkpoints(layer, q, k, v, slope, cu_seqlens)
        if not (torch.is_grad_enabled() and any(x.requires_grad for x in (q, k, v))):
            return lightning_attn_func(q, k, v, slope=slope, initial_state=pool, cu_seqlens=cu_seqlens,
                                       slot_ids=self.slot_ids)[0]
        # A forward that needs gradients: the in-place pool op has none, so gather and write back.
        idx = self.slot_ids.long()
        o, final = lightning_attn_func(q, k, v, slope=slope, initial_state=pool.index_select(0, idx),
                                       output_final_state=True, cu_seqlens=cu_seqlens)
        pool.index_copy_(0, idx, final)
        return o

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
        """Add ``num_tokens`` (LongTensor ``[N]`` or int) to the offsets after a forward; in pool
        mode in place, to the offsets of the rows' slots only (a captured graph replays it)."""
        if not self.is_pool:
            self.offset = self.offset + num_tokens
            return
        live = (self.slot_ids >= 0).long()
        # a Python count stays a scalar: no host-to-device copy inside a graph capture
        add = live * (num_tokens.to(self.offset.device).long() if isinstance(num_tokens, Tensor) else int(num_tokens))
        self.offset.index_add_(0, self.slot_ids.clamp(min=0).long(), add)

    def index_select(self, index: Tensor) -> "TNLCache":
        """A cache of the sequences ``index`` (LongTensor ``[M]``), e.g. to drop finished ones."""
        if self.is_pool:
            raise RuntimeError("TNLCache.index_select: a pool keeps its slots; choose rows with use_slots instead.")
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
        if self.is_pool:
            raise RuntimeError("TNLCache.begin_speculation: not supported on a state pool; use "
                               "lightning_attn_decode_tokens with slot_ids and num_accepted directly.")
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
