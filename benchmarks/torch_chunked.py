"""Lightning attention in plain PyTorch: chunked, batched matmuls, autograd for backward.

The baseline the C++ CPU op is measured against (benchmarks/bench_cpu.py); also a
readable statement of the block algorithm of DESIGN.md.
"""
import torch
import torch.nn.functional as F


def lightning_attn_torch(q, k, v, slope=None, scale=1.0, chunk=64):
    """q, k: [B, T, H, Dk]; v: [B, T, H, Dv] -> o [B, T, H, Dv] (q's dtype), float32 inside."""
    B, T, H, Dk = q.shape
    Dv = v.shape[-1]
    pad = (-T) % chunk
    n = (T + pad) // chunk
    # [B, T, H, D] -> [B, H, n, C, D]
    def blocks(x):
        return F.pad(x.float(), (0, 0, 0, 0, 0, pad)).view(B, n, chunk, H, -1).permute(0, 3, 1, 2, 4)
    Q, K, V = blocks(q), blocks(k), blocks(v)
    log_lam = -(slope.float() if slope is not None else torch.zeros(H)).view(1, H, 1, 1, 1)
    r = torch.arange(chunk, dtype=torch.float32)
    diff = r.view(-1, 1) - r.view(1, -1)
    mask = torch.where(diff >= 0, torch.exp(log_lam * diff), torch.zeros(()))       # [1, H, 1, C, C]
    q_decay = torch.exp(log_lam * (r + 1).view(-1, 1))                              # [1, H, 1, C, 1]
    k_decay = torch.exp(log_lam * (chunk - 1 - r).view(-1, 1))
    chunk_decay = torch.exp(log_lam * chunk).view(1, H, 1, 1)
    O = (Q @ K.transpose(-1, -2) * mask) @ V                                         # intra-chunk
    KV = (K * k_decay).transpose(-1, -2) @ V                                         # [B, H, n, Dk, Dv]
    S = torch.zeros(B, H, Dk, Dv)
    inter = []
    for i in range(n):                                                               # carried state
        inter.append((Q[:, :, i] * q_decay[:, :, 0]) @ S)
        S = chunk_decay * S + KV[:, :, i]
    O = scale * (O + torch.stack(inter, dim=2))
    return O.permute(0, 2, 3, 1, 4).reshape(B, n * chunk, H, Dv)[:, :T].to(q.dtype)
