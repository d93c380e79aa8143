"""Linear + cross-entropy without the ``[N, V]`` logits in memory.

A language model's loss over N tokens materialises N x V logits (and as many gradients):
at 128K tokens and GPT-2's 50K vocabulary that is 13 GB in bf16 each, more than the whole
model's weights and optimizer. ``linear_cross_entropy`` walks the tokens in chunks: per
chunk it computes the logits, the loss and, in the same pass, the gradients of the hidden
states and of the weight (softmax - one-hot is known as soon as the chunk's logits are), so
the backward only scales the stored gradients. On CUDA the per-chunk softmax runs compiled
(two passes over the chunk's logits). Peak extra memory: one chunk of logits and their
gradient plus dh ``[N, C]`` and dW ``[V, C]`` (float32).
"""
from typing import Optional

import torch
from torch import Tensor

from .ops import acc_dtype

__all__ = ["linear_cross_entropy"]


def _chunk_loss_and_grad(logits: Tensor, labels: Tensor, valid: Tensor, acc: torch.dtype, need_grad: bool):
    """Sum of the chunk's losses and (need_grad) its gradient w.r.t. the logits, softmax - one-hot,
    in logits' dtype; statistics in acc. On CUDA this runs compiled: two passes over the logits."""
    lf = logits.to(acc)  # [n, V]
    lse = torch.logsumexp(lf, dim=-1)  # [n]
    loss = ((lse - lf.gather(1, labels[:, None])[:, 0]) * valid).sum()
    if not need_grad:
        return loss, None
    onehot = torch.arange(lf.shape[1], device=lf.device)[None, :] == labels[:, None]
    g = (torch.exp(lf - lse[:, None]) - onehot.to(acc)) * valid[:, None].to(acc)
    return loss, g.to(logits.dtype)


_compiled_chunk = None


def _chunk_fn(device: torch.device):
    global _compiled_chunk
    if device.type != "cuda":
        return _chunk_loss_and_grad
    if _compiled_chunk is None:  # compiled once, on first use (dynamic: the last chunk is shorter)
        _compiled_chunk = torch.compile(_chunk_loss_and_grad, dynamic=True)
    return _compiled_chunk


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, labels: Tensor, ignore_index: int, chunk: int, dtype: torch.dtype):
        valid = labels != ignore_index  # [N]
        n_valid = valid.sum().clamp(min=1)
        want_dh, want_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        acc = acc_dtype(dtype)  # loss and softmax precision
        w = weight.to(dtype)
        dh = torch.empty_like(h) if want_dh else None
        dw = torch.zeros(weight.shape, dtype=acc, device=weight.device) if want_dw else None
        total = torch.zeros((), dtype=acc, device=h.device)
        fn = _chunk_fn(h.device)
        for s in range(0, h.shape[0], chunk):
            hc = h[s:s + chunk].to(dtype)  # [n, C]
            loss, g = fn(hc @ w.t(), labels[s:s + chunk].clamp(min=0), valid[s:s + chunk], acc, want_dh or want_dw)
            total += loss
            if want_dh:
                dh[s:s + chunk] = g @ w
            if want_dw:
                dw += g.t() @ hc  # a product in dtype per chunk (as autocast's), summed in float32
        ctx.save_for_backward(dh, dw, n_valid)
        ctx.weight_dtype = weight.dtype
        return total / n_valid

    @staticmethod
    def backward(ctx, grad_loss: Tensor):
        dh, dw, n_valid = ctx.saved_tensors
        scale = grad_loss / n_valid
        return (dh * scale.to(dh.dtype) if dh is not None else None,
                (dw * scale).to(ctx.weight_dtype) if dw is not None else None, None, None, None, None)


def linear_cross_entropy(h: Tensor, weight: Tensor, labels: Tensor, ignore_index: int = -100,
                         chunk_size: int = 8192, dtype: Optional[torch.dtype] = None) -> Tensor:
    """Mean cross-entropy of ``softmax(h W^T)`` against labels, never holding all the logits.

    Args:
        h: hidden states ``[..., C]``.
        weight: the output projection ``[V, C]`` (e.g. ``lm_head.weight``).
        labels: targets ``[...]`` (h's leading shape); ``ignore_index`` entries do not count.
        chunk_size: tokens per chunk (float32 logits of one chunk: chunk_size x V x 4 bytes).
        dtype: the matmul dtype; default: the autocast dtype when autocast is on, else h's.

    Returns:
        The float32 mean loss over the non-ignored targets (0 when there are none).

    Example:
        >>> loss = linear_cross_entropy(h, model.lm_head.weight, labels)
    """
    if h.shape[:-1] != labels.shape:
        raise ValueError(f"linear_cross_entropy: labels {tuple(labels.shape)} must match h's leading "
                         f"shape {tuple(h.shape[:-1])}.")
    if chunk_size < 1:
        raise ValueError(f"linear_cross_entropy: chunk_size must be >= 1, got {chunk_size}.")
    if dtype is None:
        dev = h.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else h.dtype
    with torch.autocast(h.device.type, enabled=False):
        return _LinearCrossEntropy.apply(h.reshape(-1, h.shape[-1]), weight, labels.reshape(-1), ignore_index,
                                         chunk_size, dtype)
