"""Text generation for TNL with the recurrent cache: packed prefill, then batched decode steps.

A batch of prompts of different lengths needs no padding: the prompts are packed into one
row and prefilled with ``cu_seqlens`` (positions restart and states reset per prompt); the op's
final states ``[N, H, Dk, Dv]`` are exactly the per-prompt states, and each sequence's offset
is its own length. Every new token then costs one decode-op step per layer for the batch.
"""
from typing import Iterable, List, Optional, Sequence, Union

import torch
from torch import Tensor

__all__ = ["generate", "sample_logits"]


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


@torch.no_grad()
def generate(model, prompts: Union[Tensor, Sequence[Sequence[int]]], max_new_tokens: int,
             temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
             stop_tokens: Optional[Iterable[int]] = None, generator: Optional[torch.Generator] = None,
             return_logits: bool = False):
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Args:
        model: a ``TransNormerLLM`` (or any model with ``forward_features``, ``lm_head`` and
            ``new_cache`` taking ``cache`` and ``cu_seqlens`` like it).
        prompts: LongTensor ``[B, T]`` or a list of B token lists of any (>= 1) lengths.
        max_new_tokens: tokens to add per prompt.
        temperature, top_k, top_p, generator: see ``sample_logits`` (temperature 0: greedy).
        stop_tokens: a sequence ends after it emits one of these (the stop token is kept).
        return_logits: also return the logits ``[B, steps, V]`` of every step (for tests).

    Returns:
        A list of B lists with the new tokens only (and the logits when asked).

    Example:
        >>> generate(model, [[464, 3290, 318], [40]], max_new_tokens=20, temperature=0)
    """
    if isinstance(prompts, Tensor):
        prompts = prompts.tolist()
    prompts = [list(p) for p in prompts]
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token.")
    device = next(model.parameters()).device
    stop = set(stop_tokens or ())
    N = len(prompts)

    # prefill: all prompts packed into one row, one state per prompt
    lengths = torch.tensor([len(p) for p in prompts], device=device)
    cu_seqlens = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int32)  # [N + 1]
    ids = torch.tensor([t for p in prompts for t in p], device=device)[None]  # [1, sum(lengths)]
    cache = model.new_cache()
    h = model.forward_features(ids, cache=cache, cu_seqlens=cu_seqlens)  # [1, total, C]
    logits = model.lm_head(h[0, cu_seqlens[1:].long() - 1])  # [N, V], each prompt's last position

    out: List[List[int]] = [[] for _ in range(N)]
    all_logits = []
    finished = [False] * N
    for step in range(max_new_tokens):
        if return_logits:
            all_logits.append(logits.float())
        tok = sample_logits(logits, temperature, top_k, top_p, generator)  # [N]
        for i, t in enumerate(tok.tolist()):
            if not finished[i]:
                out[i].append(t)
                if t in stop:
                    finished[i] = True
        if all(finished) or step == max_new_tokens - 1:
            break
        # one decode step for the whole batch (finished rows run along; their tokens are dropped)
        logits = model.lm_head(model.forward_features(tok[:, None], cache=cache))[:, -1]  # [N, V]
    if return_logits:
        return out, torch.stack(all_logits, dim=1)
    return out
