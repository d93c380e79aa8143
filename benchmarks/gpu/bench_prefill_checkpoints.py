"""Prefill with state checkpoints: the one-pass op (fwd_checkpoints) against the plain forward with
a final state and against the two-pass composition, H = 16, Dk = Dv = 128, bf16, decay on,
checkpoints every N tokens. Medians of triton.testing.do_bench in one process, on random inputs;
each case's checkpoints are compared across the two paths before timing. The roofline column is
arithmetic: q, k, v read and o written once (2 bytes each) plus the float32 checkpoints written,
at the measured copy bandwidth.
    python benchmarks/gpu/bench_prefill_checkpoints.py --out results.json
"""
import argparse
import json

import torch
import triton.testing

import lightning_attn as la
from lightning_attn.prefill import _two_pass

H, D = 16, 128
CASES = [(1, 32768, 1024), (4, 8192, 1024), (16, 4096, 1024), (16, 4096, 256), (1, 131072, 4096)]


def copy_bandwidth():
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    return 2 * x.numel() / (triton.testing.do_bench(lambda: y.copy_(x), return_mode="median") * 1e-3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="prefill_checkpoints.json")
    args = ap.parse_args()
    bw = copy_bandwidth()
    ops = torch.ops.lightning_attn
    rows = []
    for B, T, N in CASES:
        q, k, v = (torch.randn(B, T, H, D, device="cuda", dtype=torch.bfloat16) * D ** -0.5 for _ in range(3))
        slope = la.tnl_slopes(H, 0, 24).cuda()
        h0 = torch.randn(B, H, D, D, device="cuda") * 0.1
        J = -(-T // N)
        one = ops.fwd_checkpoints(q, k, v, slope, 1.0, h0, None, False, N, J)
        two = _two_pass(q, k, v, N, J, slope, 1.0, h0, None)
        err = max((a.float() - b.float()).norm().item() / b.float().norm().item() for a, b in zip(one, two))
        assert err < 1e-2 and all(torch.isfinite(x).all() for x in one), err
        t_fwd = triton.testing.do_bench(lambda: la.lightning_attn_func(q, k, v, slope, 1.0, h0, True),
                                        return_mode="median")
        t_one = triton.testing.do_bench(lambda: ops.fwd_checkpoints(q, k, v, slope, 1.0, h0, None, False, N, J),
                                        return_mode="median")
        t_two = triton.testing.do_bench(lambda: _two_pass(q, k, v, N, J, slope, 1.0, h0, None), return_mode="median")
        io = B * T * H * 4 * D * 2
        ck = B * J * H * D * D * 4
        rows.append(dict(B=B, T=T, N=N, fwd_ms=t_fwd, one_pass_ms=t_one, two_pass_ms=t_two,
                         one_over_fwd=t_one / t_fwd, two_over_fwd=t_two / t_fwd,
                         roofline_ms=(io + ck) / bw * 1e3, roofline_fwd_ms=io / bw * 1e3,
                         checkpoint_MB=ck / 2**20, max_rel_diff_one_vs_two=err))
    dev = torch.cuda.get_device_name()
    json.dump(dict(device=dev, copy_GBps=bw / 1e9, H=H, D=D, dtype="bfloat16", rows=rows), open(args.out, "w"), indent=1)
    print(f"{dev}, copy {bw / 1e9:.0f} GB/s; H {H}, D {D}, bf16, decay on, initial state")
    print(f"{'B':>3} {'T':>7} {'N':>5} {'fwd ms':>8} {'1-pass':>8} {'2-pass':>8} {'1/fwd':>6} {'2/fwd':>6} "
          f"{'roof(1)':>8} {'ckpt MB':>8}")
    for r in rows:
        print(f"{r['B']:>3} {r['T']:>7} {r['N']:>5} {r['fwd_ms']:8.3f} {r['one_pass_ms']:8.3f} {r['two_pass_ms']:8.3f} "
              f"{r['one_over_fwd']:6.2f} {r['two_over_fwd']:6.2f} {r['roofline_ms']:8.3f} {r['checkpoint_MB']:8.1f}")


if __name__ == "__main__":
    main()
