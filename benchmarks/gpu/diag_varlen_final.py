"""Diagnosis: is the final state of a portable, packed, split call deterministic and fully written?

The call of bits_dump.py whose final states changed between two builds (B1_T8192_H16_Dk64_Dv128
varlen state, hopper=False): three runs each with and without the Hopper kernels, the third with
uninitialised memory poisoned (NaN), and each sequence against the float64 chunked reference."""
import sys

import torch

sys.path.insert(0, "tests")
import lightning_attn as la  # noqa: E402
from reference import lightning_attn_chunked_ref, rel_err  # noqa: E402

dev = "cuda"
B, T, H, Dk, Dv, dt = 1, 8192, 16, 64, 128, torch.bfloat16
g = torch.Generator(device=dev).manual_seed(B * 7919 + T * 31 + Dk * 3 + Dv)
rnd = lambda *s, dtype=dt: torch.randn(*s, device=dev, dtype=dtype, generator=g)  # noqa: E731
q, k, v = rnd(B, T, H, Dk) * Dk ** -0.5, rnd(B, T, H, Dk) * Dk ** -0.5, rnd(B, T, H, Dv)
slope = torch.rand(H, device=dev, generator=g) * 0.2 + 0.001
cut = sorted(torch.randint(1, T, (3,), generator=torch.Generator().manual_seed(T)).tolist())
cu = torch.tensor([0] + cut + [T], device=dev, dtype=torch.int32)
print("cu_seqlens", cu.tolist())
h0 = rnd(4, H, Dk, Dv, dtype=torch.float32) * 0.1
for hopper in (False, True):
    outs = []
    for poison in (False, False, True):
        torch.utils.deterministic.fill_uninitialized_memory = poison
        torch.use_deterministic_algorithms(poison, warn_only=True)
        with la.kernel_options(hopper=hopper):
            o, hT = la.lightning_attn_func(q, k, v, slope, Dk ** -0.5, h0, cu_seqlens=cu, output_final_state=True)
        torch.cuda.synchronize()
        outs.append((o, hT))
        print(f"hopper={hopper} poison={poison} finite o {bool(torch.isfinite(o).all())} hT {bool(torch.isfinite(hT).all())}")
    print(f"hopper={hopper} runs equal: o {torch.equal(outs[0][0], outs[1][0])} hT {torch.equal(outs[0][1], outs[1][1])} "
          f"poisoned hT equal {torch.equal(outs[0][1], outs[2][1])}")
    c = cu.tolist()
    for n in range(4):
        sl = slice(c[n], c[n + 1])
        ro, rh = lightning_attn_chunked_ref(q[:, sl], k[:, sl], v[:, sl], slope, Dk ** -0.5, h0[n:n + 1], chunk=64)
        print(f"  seq {n} len {c[n+1]-c[n]}: rel_err hT {rel_err(outs[0][1][n:n+1], rh):.2e} o {rel_err(outs[0][0][:, sl], ro):.2e}"
              f" max|hT diff run0-run2| {(outs[0][1][n] - outs[2][1][n]).abs().max().item():.3e}")
