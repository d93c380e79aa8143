"""Text generation for TNL with the recurrent cache: packed prefill, then batched decode steps.

A batch of prompts of different lengths needs no padding: the prompts are packed into one
row and prefilled with ``cu_seqlens`` (positions restart and states reset per prompt) into the
slots of a state pool (``TNLCache.pool``, prompt n in slot n: the path a serving engine takes);
the op writes each prompt's final state into its slot, and each sequence's offset is its own
length. Every new token then costs one decode-op step per layer for the batch, on the pool rows
in place.

``speculative_generate`` adds greedy speculative decoding: a small draft model proposes K
tokens one step at a time, the model checks all of them in one forward (each layer one
``lightning_attn_decode_tokens`` launch), and every sequence keeps the longest agreeing
prefix plus the model's own next token; both caches then keep exactly the accepted tokens
(``TNLCache.accept``). The output is plain greedy decoding's, token for token.
"""
from typing import Iterable, List, Optional, Sequence, Union

import torch
from torch import Tensor

from .cache import TNLCache
from .graphs import FixedBufferStep, compiled

__all__ = ["generate", "sample_logits", "speculative_generate", "DecodeStep"]


def sample_logits(logits: Tensor, temperature: float = 1.0, top_k: Optional[int] = None,
                  top_p: Optional[float] = None, generator: Optional[torch.Generator] = None) -> Tensor:
    """Pick the next token of each row: greedy when ``temperature == 0``, else sample.

    Args:
        logits: ``[N, V]``.
        temperature: divides the logits; 0 means argmax.
        top_k: keep the k most likely tokens.
        top_p: keep the smallest set of most likely tokens whose probability reaches top_p (nucleus).
        generator: a torch.Generator for reproducible sampling.

    Returns:
        LongTensor ``[N]``.
    """
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # [N, 1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # mass before this token already reaches top_p
        drop[:, 0] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def _prefill(model, prompts: List[List[int]], device, pool: bool = False):
    """Packed prefill of all prompts; returns the cache and each prompt's last logits ``[N, V]``.
    pool: the cache is a state pool of N slots, prompt n in slot n (the serving path: prefill
    and decode steps read and write the pool rows in place)."""
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    cu_seqlens = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int32)  # [N + 1]
    ids = torch.tensor([t for p in prompts for t in p], device=device)[None]  # [1, sum(lengths)]
    cache = model.new_cache(num_slots=len(prompts)) if pool else model.new_cache()
    if pool:
        cache.use_slots(torch.arange(len(prompts), dtype=torch.int32, device=device))
    h = model.forward_features(ids, cache=cache, cu_seqlens=cu_seqlens)  # [1, total, C]
    return cache, model.lm_head(h[0, cu_seqlens[1:].long() - 1])  # each prompt's last position


def _as_prompt_lists(prompts) -> List[List[int]]:
    if isinstance(prompts, Tensor):
        prompts = prompts.tolist()
    prompts = [list(p) for p in prompts]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token.")
    return prompts


def _decode_logits(model, tok: Tensor, offset: Tensor, states: List[Tensor], slot_ids: Optional[Tensor] = None):
    """One token per sequence from a cache given as its parts: ``(logits [N, V], new offset)``.
    The states are updated in place (the decode op; with slot_ids, pool rows, and the offsets in
    place too); a pure function of tensors for torch.compile."""
    cache = TNLCache(len(states), offset)
    cache.states = list(states)
    cache.slot_ids = slot_ids
    logits = model.lm_head(model.forward_features(tok[:, None], cache=cache))[:, -1]
    return logits, cache.offset


class DecodeStep(FixedBufferStep):
    """A model's one-token decode step on fixed buffers, compiled and/or captured as a CUDA graph.

    ``step(tok)`` feeds ``tok [N]`` to every sequence of ``cache`` (states updated in place,
    offsets advanced) and returns the logits ``[N, V]`` (with a graph: its output buffer, valid
    until the next call). Capture needs warm-up runs, which move the cache: its states and
    offsets are saved before and restored after, so the cache is as it was when the first
    ``step`` runs.
    """

    def __init__(self, model, cache, compile: Union[bool, str] = False, cuda_graph: bool = False):
        if any(s is None for s in cache.states) or cache.offset is None:
            raise ValueError("DecodeStep: the cache is empty; prefill the prompts first.")
        self.model, self.cache = model, cache
        self.fn = compiled(_decode_logits, compile)
        self.tok = torch.zeros_like(cache.offset)
        self.offset = cache.offset.clone()  # fixed address: the graph reads and writes it
        cache.offset = self.offset
        if cuda_graph:
            self.capture([*cache.states, self.offset])

    def _run(self) -> Tensor:
        logits, offset = self.fn(self.model, self.tok, self.offset, self.cache.states, self.cache.slot_ids)
        self.offset.copy_(offset)
        return logits


@torch.no_grad()
def generate(model, prompts: Union[Tensor, Sequence[Sequence[int]]], max_new_tokens: int,
             temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
             stop_tokens: Optional[Iterable[int]] = None, generator: Optional[torch.Generator] = None,
             return_logits: bool = False, compile_step: Union[bool, str] = False, cuda_graph: bool = False):
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Args:
        model: a ``TransNormerLLM`` (or any model with ``forward_features``, ``lm_head`` and
            ``new_cache`` taking ``cache`` and ``cu_seqlens`` like it).
        prompts: LongTensor ``[B, T]`` or a list of B token lists of any (>= 1) lengths.
        max_new_tokens: tokens to add per prompt.
        temperature, top_k, top_p, generator: see ``sample_logits`` (temperature 0: greedy).
        stop_tokens: a sequence ends after it emits one of these (the stop token is kept).
        return_logits: also return the logits ``[B, steps, V]`` of every step (for tests).
        compile_step: run the one-token decode step through ``torch.compile``; a string is
            its mode (``"max-autotune-no-cudagraphs"``: inductor tunes the one-row GEMMs, and may
            turn them into reductions fused with the norms, at the cost of a longer compile).
        cuda_graph: capture the decode step (compiled first with compile_step) once as a CUDA
            graph and replay it for every token: the states are updated in place and the
            positions live in a fixed buffer, so each token costs one graph launch. CUDA only.

    Returns:
        A list of B lists with the new tokens only (and the logits when asked).

    Example:
        >>> generate(model, [[464, 3290, 318], [40]], max_new_tokens=20, temperature=0)
    """
    prompts = _as_prompt_lists(prompts)
    device = next(model.parameters()).device
    stop = set(stop_tokens or ())
    N = len(prompts)
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"generate: cuda_graph=True needs a model on a CUDA device, got {device}.")
    # all prompts packed into one row, prefilled into the slots of a state pool; logits [N, V]
    cache, logits = _prefill(model, prompts, device, pool=True)
    decode_step = DecodeStep(model, cache, compile=compile_step, cuda_graph=cuda_graph) if (compile_step or cuda_graph) else None

    out: List[List[int]] = [[] for _ in range(N)]
    all_logits = []
    finished = [False] * N
    for step in range(max_new_tokens):
        if return_logits:
            all_logits.append(logits.to(torch.float32, copy=True))  # a graph step returns the same buffer every step
        tok = sample_logits(logits, temperature, top_k, top_p, generator)  # [N]
        for i, t in enumerate(tok.tolist()):
            if not finished[i]:
                out[i].append(t)
                if t in stop:
                    finished[i] = True
        if all(finished) or step == max_new_tokens - 1:
            break
        # one decode step for the whole batch (finished rows run along; their tokens are dropped)
        if decode_step is not None:
            logits = decode_step(tok)
        else:
            logits = model.lm_head(model.forward_features(tok[:, None], cache=cache))[:, -1]  # [N, V]
    if return_logits:
        return out, torch.stack(all_logits, dim=1)
    return out


@torch.no_grad()
def speculative_generate(model, draft_model, prompts: Union[Tensor, Sequence[Sequence[int]]],
                         max_new_tokens: int, num_draft_tokens: int = 4,
                         stop_tokens: Optional[Iterable[int]] = None, return_stats: bool = False):
    """Greedy generation with a draft model; the same tokens as ``generate(..., temperature=0)``.

    Each round, per sequence: the draft proposes ``d_1..d_K`` greedily (K + 1 one-token steps,
    the last one only so that its cache holds ``d_K`` too), the model runs ``[last, d_1..d_K]``
    in one forward and predicts ``g_0..g_K``; the sequence keeps ``d_1..d_a`` (the longest
    prefix with ``d_j == g_{j-1}``) and ``g_a``, so every round adds 1 to K + 1 tokens.

    Args:
        model, draft_model: ``TransNormerLLM`` models with the same vocabulary, on one device.
        prompts: as ``generate``.
        max_new_tokens: tokens to add per prompt.
        num_draft_tokens: K, 1 <= K <= 15 (the verify op takes up to 16 tokens per sequence).
        stop_tokens: a sequence ends after it emits one of these (the stop token is kept).
        return_stats: also return ``{"rounds", "drafted", "accepted"}`` (summed over sequences).

    Returns:
        A list of lists of new tokens (and the stats when asked).

    Example:
        >>> speculative_generate(model, draft, [[464, 3290, 318]], max_new_tokens=64, num_draft_tokens=4)
    """
    K = int(num_draft_tokens)
    if not 1 <= K <= 15:
        raise ValueError(f"speculative_generate: num_draft_tokens must be in [1, 15], got {num_draft_tokens}.")
    if draft_model.config.vocab_size != model.config.vocab_size:
        raise ValueError(f"speculative_generate: draft_model's vocab_size {draft_model.config.vocab_size} "
                         f"differs from model's {model.config.vocab_size}.")
    prompts = _as_prompt_lists(prompts)
    device = next(model.parameters()).device
    stop = set(stop_tokens or ())
    N = len(prompts)
    cache, logits = _prefill(model, prompts, device)
    draft_cache, _ = _prefill(draft_model, prompts, device)
    last = logits.argmax(dim=-1)  # [N], emitted, not yet fed to either model
    out: List[List[int]] = [[t] for t in last.tolist()]
    finished = [t in stop for t in last.tolist()]
    stats = {"rounds": 0, "drafted": 0, "accepted": 0}
    while not all(f or len(o) >= max_new_tokens for f, o in zip(finished, out)):
        # draft: K + 1 one-token steps from `last`; its states move and are rolled back in accept
        draft_cache.begin_speculation(advance=True)
        fed = [last]
        for _ in range(K + 1):
            h = draft_model.forward_features(fed[-1][:, None], cache=draft_cache)  # [N, 1, C]
            fed.append(draft_model.lm_head(h[:, -1]).argmax(dim=-1))
        fed = torch.stack(fed[:K + 1], dim=1)  # [N, K + 1] = [last, d_1..d_K]
        # verify: the model sees all K + 1 tokens at once; its states stay until accept
        cache.begin_speculation(advance=False)
        g = model.lm_head(model.forward_features(fed, cache=cache)).argmax(dim=-1)  # [N, K + 1]
        agree = (fed[:, 1:] == g[:, :-1]).int()  # [N, K]
        a = agree.cumprod(dim=1).sum(dim=1)  # [N], accepted draft tokens
        cache.accept(a + 1)  # `last` and d_1..d_a
        draft_cache.accept(a + 1)
        last = g.gather(1, a[:, None])[:, 0]  # g_a, the model's own next token
        a_host, fed_host, last_host = a.tolist(), fed.tolist(), last.tolist()
        stats["rounds"] += 1
        for i in range(N):
            if finished[i] or len(out[i]) >= max_new_tokens:
                continue
            stats["drafted"] += K
            stats["accepted"] += a_host[i]
            for t in fed_host[i][1:a_host[i] + 1] + [last_host[i]]:  # d_1..d_a, g_a
                out[i].append(t)
                if t in stop:
                    finished[i] = True
                    break
    out = [o[:max_new_tokens] for o in out]
    return (out, stats) if return_stats else out
