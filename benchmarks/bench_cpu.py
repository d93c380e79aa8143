"""The C++ CPU op against plain PyTorch chunked lightning attention (same machine, same inputs).

    python benchmarks/bench_cpu.py [--T 2048 8192] [--json out.json]
"""
import argparse
import json
import os
import platform
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout without installing
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import lightning_attn as la  # noqa: E402
from reference import lightning_attn_chunked_ref  # noqa: E402


def lightning_attn_torch(q, k, v, slope):
    """Plain PyTorch: the block form of tests/reference.py in float32, chunks of 64, autograd backward."""
    return lightning_attn_chunked_ref(q, k, v, slope, chunk=64, dtype=torch.float32)[0]


def median_time(fn, reps=5):
    fn()  # warm-up
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--T", type=int, nargs="+", default=[2048, 8192])
    p.add_argument("--B", type=int, default=1)
    p.add_argument("--H", type=int, default=8)
    p.add_argument("--D", type=int, default=128)
    p.add_argument("--json")
    args = p.parse_args()
    print(f"# CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    rows = []
    for T in args.T:
        q, k = (torch.randn(args.B, T, args.H, args.D) * 0.1 for _ in range(2))
        v = torch.randn(args.B, T, args.H, args.D)
        slope = la.tnl_slopes(args.H, 0, 2)
        o_cpp, _ = la.lightning_attn_func(q, k, v, slope)
        o_ref = lightning_attn_torch(q, k, v, slope)
        err = ((o_cpp - o_ref).norm() / o_ref.norm()).item()
        assert err < 1e-4, f"the two implementations disagree: rel err {err}"
        row = {"T": T, "B": args.B, "H": args.H, "D": args.D, "rel_err": err}
        for mode in ("fwd", "fwd+bwd"):
            for name, fn in (("cpp", la.lightning_attn_func), ("torch", lightning_attn_torch)):
                leaves = [x.clone().requires_grad_(mode != "fwd") for x in (q, k, v)]

                def run():
                    o = fn(*leaves, slope)
                    o = o[0] if isinstance(o, tuple) else o
                    if mode != "fwd":
                        o.sum().backward()
                with torch.no_grad() if mode == "fwd" else torch.enable_grad():
                    row[f"{mode}_{name}_ms"] = 1e3 * median_time(run)
            row[f"{mode}_speedup"] = row[f"{mode}_torch_ms"] / row[f"{mode}_cpp_ms"]
        rows.append(row)
    print(f"{'T':>6} {'mode':>8} {'C++ op ms':>10} {'torch ms':>10} {'speedup':>8}")
    for r in rows:
        for mode in ("fwd", "fwd+bwd"):
            print(f"{r['T']:>6} {mode:>8} {r[f'{mode}_cpp_ms']:>10.1f} {r[f'{mode}_torch_ms']:>10.1f} "
                  f"{r[f'{mode}_speedup']:>7.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                       "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
