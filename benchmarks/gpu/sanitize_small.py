"""Small forward/backward/decode/srms_norm calls for compute-sanitizer (memcheck, racecheck).

Covers the plain grid and the sequence split (B * H = 2), odd head dims, varlen, head_first;
Dk = Dv = 64 and 128 in 16 bits run the Hopper kernels on sm_90 (split with pass 1 at B * H = 2,
plain grid at H = 136), fp16 varlen included, prefills into a state pool (slot_ids) and with
checkpoints (fwd_checkpoints), and (memcheck) the split that keeps its states in the output rows.
"""
import os

import torch

import lightning_attn as la

torch.manual_seed(0)
dev = "cuda"
for (B, T, H, Dk, Dv, hf) in [(1, 700, 2, 64, 64, False), (2, 130, 3, 100, 48, True), (1, 300, 1, 256, 128, False),
                              (1, 300, 2, 128, 128, False), (1, 70, 136, 128, 128, True)]:
    shape = (lambda D: (B, H, T, D)) if hf else (lambda D: (B, T, H, D))
    q, k, v = (torch.randn(shape(D), device=dev, dtype=torch.bfloat16, requires_grad=True) for D in (Dk, Dk, Dv))
    h0 = torch.randn(B, H, Dk, Dv, device=dev, requires_grad=True)
    slope = torch.rand(H, device=dev)
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True, head_first=hf)
    (o.float().square().sum() + hT.sum()).backward()
# the split without initial or final state: pass 1 skips the last segment (fwd, dq, dk/dv)
q, k, v = (torch.randn(1, 300, 2, 128, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
la.lightning_attn_func(q, k, v, torch.rand(2, device=dev))[0].float().sum().backward()
cu = torch.tensor([0, 5, 5, 200], device=dev, dtype=torch.int32)
for D in (64, 128):
    q, k, v = (torch.randn(1, 200, 2, D, device=dev, dtype=torch.float16, requires_grad=True) for _ in range(3))
    o, _ = la.lightning_attn_func(q, k, v, torch.rand(2, device=dev), cu_seqlens=cu, output_final_state=True)
    o.float().sum().backward()
# the split with its segment states in the rows of o, dq and dk (B x H = SMs / 2: two segments
# of 512-token sub-segments); memcheck only (SANITIZE_ROWS=0 under racecheck: slow, and these
# rows are global memory, which racecheck does not track)
if os.environ.get("SANITIZE_ROWS", "1") == "1":
    H = torch.cuda.get_device_properties(0).multi_processor_count // 4
    q, k, v = (torch.randn(2, 4096, H, 128, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    h0 = torch.randn(2, H, 128, 128, device=dev, requires_grad=True)
    o, hT = la.lightning_attn_func(q, k, v, torch.rand(H, device=dev) * 0.1, 1.0, h0, output_final_state=True)
    (o.float().sum() + hT.sum()).backward()
# prefill into rows of a state pool (slot -1 and an id past the pool read and write no row),
# plain grid and split, Hopper and portable shapes
pool = torch.randn(6, 2, 128, 128, device=dev)
with torch.no_grad():
    for (B, T, D) in [(3, 300, 128), (1, 700, 64), (2, 130, 100)]:
        q, k, v = (torch.randn(B, T, 2, D, device=dev, dtype=torch.bfloat16) for _ in range(3))
        ids = torch.tensor([4, -1, 9][:B], device=dev, dtype=torch.int32)
        p = pool[:, :, :D, :D]
        la.lightning_attn_func(q, k, v, torch.rand(2, device=dev), initial_state=p, slot_ids=ids)
# prefill with checkpoints every 64 / 128 tokens (one pass): plain grid and split, Hopper, pieces
# (Dk = 256) and portable shapes, packed sequences with an empty one, a tail past the ends
with torch.no_grad():
    for (B, T, Dk, Dv, cu) in [(3, 300, 128, 128, None), (1, 700, 64, 64, None), (2, 130, 100, 48, None),
                               (1, 300, 256, 128, None), (1, 300, 128, 128, [0, 100, 100, 300])]:
        q, k = (torch.randn(B, T, 2, Dk, device=dev, dtype=torch.bfloat16) for _ in range(2))
        v = torch.randn(B, T, 2, Dv, device=dev, dtype=torch.bfloat16)
        c = torch.tensor(cu, device=dev, dtype=torch.int32) if cu else None
        N = len(cu) - 1 if cu else B
        for every in (64, 128):
            torch.ops.lightning_attn.fwd_checkpoints(q, k, v, torch.rand(2, device=dev), 1.0,
                                                     torch.randn(N, 2, Dk, Dv, device=dev), c, False, every, 5)
state = torch.randn(4, 2, 128, 100, device=dev)
la.lightning_attn_decode(*(torch.randn(4, 2, D, device=dev) for D in (128, 128, 100)), state, torch.rand(2, device=dev))
# K tokens per sequence: float4 rows with full and partial column slices (Dv = 128, 100, Dk = 256),
# scalar rows (Dv = 50), accepted counts, returned states, pool rows with a skipped sequence
with torch.no_grad():
    for (B, K, Dk, Dv) in [(1, 1, 128, 128), (16, 1, 128, 128), (3, 5, 128, 100), (2, 16, 256, 128), (2, 3, 64, 50)]:
        q, k = (torch.randn(B, K, 2, Dk, device=dev, dtype=torch.bfloat16) for _ in range(2))
        v = torch.randn(B, K, 2, Dv, device=dev, dtype=torch.bfloat16)
        st, slope = torch.randn(B, 2, Dk, Dv, device=dev), torch.rand(2, device=dev)
        la.lightning_attn_decode_tokens(q, k, v, st, slope)
        la.lightning_attn_decode_tokens(q, k, v, st, slope, output_states=True)
        la.lightning_attn_decode_tokens(q, k, v, st, slope, num_accepted=(torch.arange(B, device=dev) % (K + 1)).int())
        pool = torch.randn(B + 2, 2, Dk, Dv, device=dev)
        ids = torch.arange(2, B + 2, device=dev, dtype=torch.int32).roll(1)
        ids[1:2] = -1
        la.lightning_attn_decode_tokens(q, k, v, pool, slope, slot_ids=ids)
x = torch.randn(7, 300, device=dev, requires_grad=True)
la.srms_norm(x).sum().backward()
torch.cuda.synchronize()
print("sanitize_small: done")
