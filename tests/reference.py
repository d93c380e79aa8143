"""The references every test and benchmark compares against.

lightning_attn_ref: float64, written straight from the recurrence, token by token (no chunking,
no tricks): the definition. lightning_attn_chunked_ref: the same sums in block form (DESIGN.md's
chunked algorithm in batched matmuls), for lengths where a token loop is too slow, in float64 by
default; in a low dtype it is the plain-PyTorch error baseline of tolerances (tol_from_baseline).
"""
import functools

import torch
import torch.nn.functional as F


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


def lightning_attn_chunked_ref(q, k, v, slope=None, scale=1.0, initial_state=None, chunk=256,
                               dtype=torch.float64):
    """Block form of lightning_attn_ref, computed in ``dtype`` (float32 accumulation for 16-bit).

    q, k: [B, T, H, Dk]; v: [B, T, H, Dv]; initial_state [B, H, Dk, Dv] or None. Per chunk of C
    tokens: o = scale * ((Q K^T * M) V + lambda^(r+1) Q S), S <- lambda^C S + (lambda^(C-1-r) K)^T V,
    M[r, s] = lambda^(r-s) for r >= s. Differentiable. Returns o [B, T, H, Dv] and the final
    state [B, H, Dk, Dv], both in ``dtype`` (float32 for 16-bit dtypes' state).
    """
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    acc = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    pad = (-T) % chunk
    n = (T + pad) // chunk
    dev = q.device

    def blocks(x):  # [B, T, H, D] -> [B, H, n, C, D]
        return F.pad(x.to(dtype), (0, 0, 0, 0, 0, pad)).view(B, n, chunk, H, -1).permute(0, 3, 1, 2, 4)
    Q, K, V = blocks(q), blocks(k), blocks(v)
    s = slope.to(device=dev, dtype=acc) if slope is not None else torch.zeros(H, device=dev, dtype=acc)
    log_lam = -s.view(1, H, 1, 1, 1)
    r = torch.arange(chunk, device=dev, dtype=acc)
    diff = r.view(-1, 1) - r.view(1, -1)
    mask = torch.where(diff >= 0, torch.exp(log_lam * diff.clamp_min(0)), torch.zeros((), device=dev, dtype=acc))
    q_decay = torch.exp(log_lam * (r + 1).view(-1, 1))[:, :, 0]                       # [1, H, C, 1]
    k_decay = torch.exp(log_lam * (chunk - 1 - r).view(-1, 1))                       # [1, H, 1, C, 1]
    chunk_decay = torch.exp(log_lam * chunk)[:, :, 0]                                  # [1, H, 1, 1]
    O = ((Q @ K.transpose(-1, -2)).to(acc) * mask).to(dtype) @ V                       # intra-chunk
    KV = ((K.to(acc) * k_decay).transpose(-1, -2) @ V.to(acc))                        # [B, H, n, Dk, Dv]
    S = (initial_state.to(acc) if initial_state is not None
         else torch.zeros(B, H, Dk, Dv, device=dev, dtype=acc))
    inter = []
    for i in range(n):                                                                  # carried state
        inter.append((Q[:, :, i].to(acc) * q_decay) @ S)
        last = min(chunk, T - i * chunk)   # the padded tail of the last chunk must not decay S
        if last == chunk:
            S = chunk_decay * S + KV[:, :, i]
        else:
            rr = r[:last]
            kd = torch.exp(log_lam[:, :, 0] * (last - 1 - rr).view(-1, 1))
            S = torch.exp(log_lam[:, :, 0] * last) * S + \
                (K[:, :, i, :last].to(acc) * kd).transpose(-1, -2) @ V[:, :, i, :last].to(acc)
    O = scale * (O.to(acc) + torch.stack(inter, dim=2))
    o = O.permute(0, 2, 3, 1, 4).reshape(B, n * chunk, H, Dv)[:, :T]
    return o.to(dtype), S


def tol_from_baseline(ref, baseline, floor=1e-6, factor=3.0):
    """FlashAttention's rule: an op may be at most ``factor`` times as far from the float64
    reference as a plain-PyTorch computation in the op's own dtype (``baseline``), plus a floor
    for results the baseline gets exactly right. Returns the bound on rel_err(op, ref)."""
    return factor * rel_err(baseline, ref) + floor


def srms_norm_ref(x, eps=1e-6):
    x = x.double()
    return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b||, in float64; NaN anywhere gives inf."""
    a, b = a.double(), b.double()
    if not torch.isfinite(a).all():
        return float("inf")
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
