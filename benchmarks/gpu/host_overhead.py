"""Where do_bench's time goes beyond the kernels (H 16, D 128, bf16, decay; 65,536 tokens per call):
per provider and shape, the host time to enqueue one call (the GPU kept busy by a sleep kernel, so
the CPU never waits), the GPU time alone (a CUDA graph of the call, replayed), and do_bench's
median (L2 flushed before each call). A do_bench time above the graph time by about the host time
minus the flush (~60 us) means the GPU waited for the host.

Usage: python benchmarks/gpu/host_overhead.py [--peers DIR] [--out DIR]
"""
import argparse
import json
import os
import sys
import time

import torch
import triton.testing

import lightning_attn as la
from lightning_attn.graphs import capture_graph

H, D = 16, 128


def host_us(fn, n=50):
    """CPU time per enqueued call while the GPU works through a long sleep."""
    fn()
    torch.cuda.synchronize()
    torch.cuda._sleep(int(2e9))  # ~1 s at 1.98 GHz: the queue never drains during the loop
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t = (time.perf_counter() - t0) / n
    torch.cuda.synchronize()
    return 1e6 * t


def graph_us(fn, n=20):
    """GPU time per call: n calls captured in one CUDA graph, replayed."""
    g, _ = capture_graph(lambda: [fn() for _ in range(n)], warmup=1)
    g.replay()
    torch.cuda.synchronize()
    return 1e3 * triton.testing.do_bench(g.replay, return_mode="median") / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", default=None)
    ap.add_argument("--out", default="/tmp/out")
    a = ap.parse_args()
    fla = None
    if a.peers:
        sys.path.insert(0, a.peers)
    try:
        from fla.ops.simple_gla import chunk_simple_gla as fla
    except Exception as e:  # noqa: BLE001
        print("FLA not available:", repr(e)[:120])
    rows = []
    for T in (1024, 4096, 65536):
        B = 65536 // T
        q = (torch.randn(B, T, H, D, device="cuda") * D ** -0.5).bfloat16()
        k = (torch.randn(B, T, H, D, device="cuda") * 0.5).bfloat16()
        v = torch.randn(B, T, H, D, device="cuda").bfloat16()
        slope = torch.rand(H, device="cuda") * 0.2 + 0.001
        providers = {"ours": lambda: la.lightning_attn_func(q, k, v, slope)}
        if fla is not None:
            g = (-slope).float()
            providers["fla_chunk"] = lambda: fla(q, k, v, g_gamma=g, scale=1.0)
        for name, fn in providers.items():
            row = {"T": T, "B": B, "provider": name, "host_us": host_us(fn),
                   "do_bench_us": 1e3 * triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")}
            try:
                row["graph_us"] = graph_us(fn)
            except Exception as e:  # noqa: BLE001 (a provider that cannot be captured)
                row["graph_us"] = None
                print(name, "not capturable:", repr(e)[:120])
            rows.append(row)
            print(f"T {T:6} {name:10} host {row['host_us']:7.1f} us  graph {row['graph_us'] or float('nan'):8.1f} us"
                  f"  do_bench {row['do_bench_us']:8.1f} us", flush=True)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "host_overhead.json"), "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
