"""Plain float64 references, written straight from the recurrence (no chunking, no tricks)."""
import functools

import torch


def _tiny_ops(fn):
    """The references run thousands of tiny ops: one thread, and no NaN fill of their
    own temporaries (the poisoning is for the ops under test)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(False)
        try:
            return fn(*args, **kwargs)
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(det, warn_only=True)
    return wrapper


@_tiny_ops
def lightning_attn_ref(q, k, v, slope=None, scale=1.0, initial_state=None, cu_seqlens=None,
                       head_first=False):
    """S_t = lambda S_{t-1} + k_t v_t^T;  o_t = scale * S_t^T q_t, in float64.

    q, k: [B, T, H, Dk]; v: [B, T, H, Dv] (or [B, H, T, D] with head_first).
    Returns o (float64, same layout) and the final states [N, H, Dk, Dv] (float64).
    Differentiable, so autograd gives the reference gradients.
    """
    if head_first:
        q, k, v = (x.transpose(1, 2) for x in (q, k, v))
    q, k, v = q.double(), k.double(), v.double()
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    lam = torch.exp(-slope.double()) if slope is not None else torch.ones(H, dtype=torch.float64)
    lam = lam.to(q.device).view(H, 1, 1)
    if cu_seqlens is None:  # all B sequences step together
        seqs, batch = [(slice(0, B), 0, T)], B
    else:
        c = cu_seqlens.tolist()
        seqs, batch = [(slice(0, 1), c[n], c[n + 1]) for n in range(len(c) - 1)], 1
    outs, finals = [], []
    for n, (b, t0, t1) in enumerate(seqs):
        if initial_state is None:
            S = torch.zeros(batch, H, Dk, Dv, dtype=torch.float64, device=q.device)
        else:
            S = initial_state[b if cu_seqlens is None else slice(n, n + 1)].double()
        for t in range(t0, t1):
            S = lam * S + k[b, t].unsqueeze(-1) * v[b, t].unsqueeze(-2)   # [batch, H, Dk, Dv]
            outs.append(scale * torch.einsum("bhk,bhkv->bhv", q[b, t], S))
        finals.append(S)
    o = torch.stack(outs, dim=1)  # [B, T, H, Dv]: steps were taken in token order
    return (o.transpose(1, 2) if head_first else o), torch.cat(finals)


def srms_norm_ref(x, eps=1e-6):
    x = x.double()
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64; NaN anywhere gives inf."""
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
