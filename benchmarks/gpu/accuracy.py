"""Relative errors of the CUDA ops against the float64 recurrence, per dtype (prints a table).

B 2, T 1024, H 4, Dk = Dv = 128, decay on, initial state; inputs scaled like activations.
"""
import sys

import torch

sys.path.insert(0, "tests")
from reference import lightning_attn_ref, rel_err  # noqa: E402

import lightning_attn as la  # noqa: E402

torch.manual_seed(0)
B, T, H, D = 2, 1024, 4, 128
print("dtype      o        final    dq       dk       dv       dh0")
for dtype in (torch.float32, torch.float16, torch.bfloat16):
    q = (torch.randn(B, T, H, D, device="cuda") * D ** -0.5).to(dtype).requires_grad_()
    k = (torch.randn(B, T, H, D, device="cuda") * 0.5).to(dtype).requires_grad_()
    v = torch.randn(B, T, H, D, device="cuda").to(dtype).requires_grad_()
    h0 = torch.randn(B, H, D, D, device="cuda").mul_(0.3).requires_grad_()
    slope = torch.rand(H, device="cuda") * 0.2 + 0.001
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True)
    do, dh = torch.randn_like(o), torch.randn_like(hT)
    g = torch.autograd.grad((o * do).sum() + (hT * dh).sum(), (q, k, v, h0))
    rl = [x.detach().double().requires_grad_() for x in (q, k, v, h0)]
    ro, rh = lightning_attn_ref(rl[0], rl[1], rl[2], slope, 1.0, rl[3])
    rg = torch.autograd.grad((ro * do.double()).sum() + (rh * dh.double()).sum(), rl)
    errs = [rel_err(o, ro), rel_err(hT, rh)] + [rel_err(a, b) for a, b in zip(g, rg)]
    print(f"{str(dtype)[6:]:10} " + " ".join(f"{e:.2e}" for e in errs))
