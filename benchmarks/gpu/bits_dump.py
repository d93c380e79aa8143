"""Checksums of every output of a fixed set of seeded calls (forward, backward, decode, prefill
with checkpoints) with
whichever lightning_attn is first on PYTHONPATH, one JSON object to --out. Two builds give the
same bits on a call where every checksum matches (benchmarks/gpu/run_restructure.sh compares them).

The checksum of a tensor is its bit pattern as integers, summed plain and weighted by position
(mod 2^63 in int64), on the GPU; NaN-poisoned outputs would show as different sums."""
import argparse
import json

import torch

import lightning_attn as la

ap = argparse.ArgumentParser()
ap.add_argument("--out", required=True)
a = ap.parse_args()
dev = "cuda"


def checksum(t):
    if t is None or t.numel() == 0:
        return None
    flat = t.detach().contiguous().view(torch.int16 if t.element_size() == 2 else torch.int32).reshape(-1)
    plain = weighted = 0
    finite = True
    for i in range(0, flat.numel(), 1 << 26):  # in pieces: a 1M-token tensor has 2^31 elements
        bits = flat[i:i + (1 << 26)].to(torch.int64)
        w = torch.arange(i, i + bits.numel(), device=t.device, dtype=torch.int64) % 1000003 + 1
        plain += int(bits.sum())
        weighted += int((bits * w).sum())
    for i in range(0, t.numel(), 1 << 26):
        finite &= bool(torch.isfinite(t.detach().reshape(-1)[i:i + (1 << 26)].float()).all())
    return [plain, weighted, finite]


def packed_cu_seqlens(T):
    """Four packed sequences of seeded lengths summing to T."""
    cut = sorted(torch.randint(1, T, (3,), generator=torch.Generator().manual_seed(T)).tolist())
    return torch.tensor([0] + cut + [T], device=dev, dtype=torch.int32)


# (B, T, H, Dk, Dv, dtype, varlen, state): the kernel table's shapes (65,536 tokens per call),
# B = 1 at 1M, and the other paths (fp32, fp16, varlen, odd dims, states).
CALLS = [(64, 1024, 16, 128, 128, torch.bfloat16, False, False), (16, 4096, 16, 128, 128, torch.bfloat16, False, True),
         (8, 8192, 16, 128, 128, torch.bfloat16, False, False), (4, 16384, 16, 128, 128, torch.bfloat16, False, True),
         (2, 32768, 16, 128, 128, torch.bfloat16, False, False), (1, 65536, 16, 128, 128, torch.bfloat16, False, True),
         (1, 1 << 20, 16, 128, 128, torch.bfloat16, False, False),
         (16, 4096, 16, 64, 64, torch.bfloat16, False, True), (1, 65536, 16, 64, 64, torch.float16, False, False),
         (16, 4096, 16, 256, 128, torch.bfloat16, False, True), (1, 65536, 16, 256, 128, torch.bfloat16, False, False),
         (2, 4096, 4, 256, 256, torch.float16, False, True), (4, 4096, 16, 128, 128, torch.float32, False, True),
         (1, 20000, 8, 128, 128, torch.bfloat16, True, True), (1, 9000, 4, 64, 64, torch.float16, True, False),
         (3, 777, 5, 100, 48, torch.bfloat16, False, True), (2, 3000, 3, 192, 160, torch.bfloat16, False, True)]
# The same under hopper=False: the portable chunk and dk/dv kernels on 16-bit inputs.
PORTABLE_CALLS = [(16, 4096, 16, 128, 128, torch.bfloat16, False, True), (16, 4096, 16, 64, 64, torch.float16, False, False),
                  (1, 8192, 16, 64, 128, torch.bfloat16, True, True), (1, 65536, 16, 128, 64, torch.bfloat16, False, True)]
out = {}
for portable, (B, T, H, Dk, Dv, dt, varlen, state) in [(False, c) for c in CALLS] + [(True, c) for c in PORTABLE_CALLS]:
    g = torch.Generator(device=dev).manual_seed(B * 7919 + T * 31 + Dk * 3 + Dv)
    rnd = lambda *s, dtype=dt: torch.randn(*s, device=dev, dtype=dtype, generator=g)
    q, k, v = rnd(B, T, H, Dk) * Dk ** -0.5, rnd(B, T, H, Dk) * Dk ** -0.5, rnd(B, T, H, Dv)
    slope = torch.rand(H, device=dev, generator=g) * 0.2 + 0.001
    cu = packed_cu_seqlens(T) if varlen else None
    N = B if cu is None else cu.numel() - 1
    h0 = rnd(N, H, Dk, Dv, dtype=torch.float32) * 0.1 if state else None
    do = rnd(B, T, H, Dv)
    dhT = rnd(N, H, Dk, Dv, dtype=torch.float32) * 0.1 if state else None
    leaves = [x.requires_grad_() for x in (q, k, v)] + ([h0.requires_grad_()] if state else [])
    key = f"B{B}_T{T}_H{H}_Dk{Dk}_Dv{Dv}_{str(dt)[6:]}" + ("_varlen" if varlen else "") + ("_state" if state else "")
    key += "_portable" if portable else ""
    with la.kernel_options(hopper=not portable):
        o, hT = la.lightning_attn_func(q, k, v, slope, Dk ** -0.5, h0, cu_seqlens=cu, output_final_state=True)
        grads = torch.autograd.grad([o, hT], leaves, [do, dhT if state else torch.zeros_like(hT)])
    out[key] = {n: checksum(t) for n, t in zip(["o", "hT", "dq", "dk", "dv", "dh0"], [o, hT] + list(grads) + [None] * 2)}
    del q, k, v, o, hT, grads, leaves, do
    torch.cuda.empty_cache()
# decode
for (B, H, Dk, Dv, dt) in [(16, 16, 128, 128, torch.bfloat16), (3, 5, 64, 100, torch.float16), (2, 4, 256, 64, torch.float32)]:
    g = torch.Generator(device=dev).manual_seed(B * 13 + Dk)
    q, k, v = (torch.randn(B, H, D, device=dev, dtype=dt, generator=g) for D in (Dk, Dk, Dv))
    state = torch.randn(B, H, Dk, Dv, device=dev, generator=g)
    o = la.lightning_attn_decode(q, k, v, state, torch.rand(H, device=dev, generator=g), Dk ** -0.5)
    out[f"decode_B{B}_H{H}_Dk{Dk}_Dv{Dv}_{str(dt)[6:]}"] = {"o": checksum(o), "state": checksum(state)}
# prefill with checkpoints (fwd_checkpoints): one sweep, a split sweep, varlen with a state,
# 128-wide pieces of Dk = 256, the portable kernel. (B, T, H, Dk, Dv, dtype, varlen, every, portable)
CKPT_CALLS = [(16, 4096, 16, 128, 128, torch.bfloat16, False, 1024, False),
              (1, 65536, 16, 128, 128, torch.bfloat16, False, 4096, False),
              (1, 20000, 8, 128, 128, torch.bfloat16, True, 1024, False),
              (2, 4096, 4, 256, 128, torch.bfloat16, False, 512, False),
              (16, 4096, 16, 64, 64, torch.float16, False, 256, True)]
for (B, T, H, Dk, Dv, dt, varlen, every, portable) in CKPT_CALLS if hasattr(torch.ops.lightning_attn, "fwd_checkpoints") else []:
    g = torch.Generator(device=dev).manual_seed(B * 7919 + T * 31 + Dk * 3 + Dv + every)
    q, k, v = (torch.randn(B, T, H, D, device=dev, dtype=dt, generator=g) * s for D, s in ((Dk, Dk ** -0.5), (Dk, Dk ** -0.5), (Dv, 1)))
    slope = torch.rand(H, device=dev, generator=g) * 0.2 + 0.001
    cu = packed_cu_seqlens(T) if varlen else None
    lens = [T] * B if cu is None else (cu[1:] - cu[:-1]).tolist()
    h0 = torch.randn(len(lens), H, Dk, Dv, device=dev, generator=g) * 0.1 if varlen else None
    J = -(-max(lens) // every)
    with la.kernel_options(hopper=not portable):
        o, hT, ck = torch.ops.lightning_attn.fwd_checkpoints(q, k, v, slope, Dk ** -0.5, h0, cu, False, every, J)
    key = f"ckpt_B{B}_T{T}_H{H}_Dk{Dk}_Dv{Dv}_{str(dt)[6:]}_every{every}" + ("_varlen" if varlen else "")
    out[key + ("_portable" if portable else "")] = {"o": checksum(o), "hT": checksum(hT), "checkpoints": checksum(ck)}
json.dump(out, open(a.out, "w"), indent=1)
print(f"{len(out)} calls written to {a.out}")
