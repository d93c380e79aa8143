"""One forward call shape (H 16, D 128, bf16, decay; --B/--T; --bwd: forward and backward), run
--iters times: the target for `ncu` (benchmarks/gpu/run_profile.sh) and a torch.profiler table of
every kernel it launches."""
import argparse

import torch

import lightning_attn as la

ap = argparse.ArgumentParser()
ap.add_argument("--B", type=int, default=16)
ap.add_argument("--T", type=int, default=4096)
ap.add_argument("--iters", type=int, default=3)
ap.add_argument("--table", action="store_true")
ap.add_argument("--bwd", action="store_true")
ap.add_argument("--hopper", type=int, default=1, help="0: the portable kernels (KernelOptions.hopper)")
a = ap.parse_args()
la.set_kernel_options(la.KernelOptions(hopper=bool(a.hopper)))
H, D = 16, 128
q = (torch.randn(a.B, a.T, H, D, device="cuda") * D ** -0.5).bfloat16()
k = (torch.randn(a.B, a.T, H, D, device="cuda") * 0.5).bfloat16()
v = torch.randn(a.B, a.T, H, D, device="cuda").bfloat16()
slope = torch.rand(H, device="cuda") * 0.2 + 0.001
if a.bwd:
    q, k, v = (x.requires_grad_() for x in (q, k, v))
    do = torch.randn_like(v)
for _ in range(a.iters):
    o = la.lightning_attn_func(q, k, v, slope)[0]
    if a.bwd:
        torch.autograd.grad(o, (q, k, v), do)
torch.cuda.synchronize()
if a.table:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            la.lightning_attn_func(q, k, v, slope)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=8))
