"""Where a decode step's time goes (385M, prompt 512, bf16), for the Transformer baseline and TNL.

For each model and batch size: torch.profiler over compiled decode steps run without a graph
(the kernels a graph would replay), grouped by kind (GEMM, lightning_attn, inductor-fused,
other), with the kernel count per step and the sum of kernel times; then the same step
captured as a CUDA graph and timed with CUDA events. Graph time minus kernel time is what the
kernels leave idle between them; the kernel rows say what a fusion would remove.
Diagnostic, GPU only:
    python benchmarks/gpu/profile_decode.py [--models tnl,transformer] [--batch-sizes 1,16]
        [--compile-mode max-autotune-no-cudagraphs] [--out DIR]
"""
import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_generation as bg  # noqa: E402
from lightning_attn.graphs import capture_graph, replay_ms  # noqa: E402


def kernel_kind(name: str) -> str:
    n = name.lower()
    if n.startswith("triton"):  # inductor names fused kernels after their ops, decode_tokens included
        return "inductor"
    if "lightning" in n:
        return "lightning_attn"
    if any(s in n for s in ("gemm", "gemv", "nvjet", "xmma", "cutlass", "splitk")):
        return "gemm"
    return "other"


WARMUP, REPLAYS = 3, 100


def make_step(model, kind, B, device, n_steps, mode=None):
    """A compiled decode step on fixed buffers (as bench_generation's graphed path); the cache
    holds the prompt and all n_steps tokens (the Transformer's static KV cache has no room past it)."""
    prompts = torch.randint(0, 50257, (B, 512), device=device)
    cache, tok, offset = bg.prefill_fixed_buffers(model, kind, prompts, 512 + n_steps)
    return bg.fixed_buffer_step(torch.compile(model, dynamic=False, mode=mode), kind, cache, tok, offset)


@torch.no_grad()
def measure(kind, B, args, steps, mode=None):
    model = bg.build(kind, args, "cuda")
    # every run of the step advances the cache: warm-up, profiled, 5 warm replays, timed replays
    # (the capture records without running)
    step = make_step(model, kind, B, "cuda", WARMUP + steps + 5 + REPLAYS, mode)
    graph, _ = capture_graph(step, warmup=WARMUP)  # compiles and warms up first
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_kind, by_name = defaultdict(lambda: [0, 0.0]), defaultdict(lambda: [0, 0.0])
    for e in kernels:
        us = e.time_range.elapsed_us()
        for table, key in ((by_kind, kernel_kind(e.name)), (by_name, e.name[:90])):
            table[key][0] += 1
            table[key][1] += us
    graph_ms = replay_ms(graph, REPLAYS, warm=5)
    per_step = lambda v: [v[0] / steps, v[1] / steps / 1e3]  # noqa: E731  (count, ms)
    row = {"model": kind, "batch": B, "compile_mode": mode or "default", "graph_ms_per_step": graph_ms,
           "kernels_per_step": len(kernels) / steps,
           "kernel_ms_per_step": sum(v[1] for v in by_kind.values()) / steps / 1e3,
           "by_kind": {k: per_step(v) for k, v in sorted(by_kind.items())},
           "top_kernels": [[k] + per_step(v) for k, v in sorted(by_name.items(), key=lambda kv: -kv[1][1])[:25]]}
    del model, graph
    torch.cuda.empty_cache()
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="tnl,transformer")
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode, e.g. max-autotune-no-cudagraphs (Triton GEMMs with fused epilogues)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    args = bg.get_args(["--device", "cuda"])
    rows = []
    for kind in a.models.split(","):
        for B in (int(b) for b in a.batch_sizes.split(",")):
            row = measure(kind, B, args, a.steps, a.compile_mode)
            rows.append(row)
            print(f"==== {kind} B={B} ({a.compile_mode or 'default'}): graph {row['graph_ms_per_step']:.3f} ms/step, "
                  f"{row['kernels_per_step']:.0f} kernels, {row['kernel_ms_per_step']:.3f} ms in kernels", flush=True)
            for k, (c, ms) in row["by_kind"].items():
                print(f"   {k:15s} {c:6.0f} kernels {ms:7.3f} ms")
            for name, c, ms in row["top_kernels"][:12]:
                print(f"   {ms * 1e3:8.1f} us {c:5.0f}x  {name}")
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        info = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "command": " ".join(sys.argv)}
        name = "profile_decode" + (f"_{a.compile_mode}" if a.compile_mode else "") + ".json"
        json.dump({"env": info, "rows": rows}, open(Path(a.out) / name, "w"), indent=1)
    print(f"compile mode: {a.compile_mode or 'default'}")
    print("| model | B | graph ms/step | kernels/step | kernel ms/step | gemm ms | lightning_attn ms | inductor ms | other ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        k = lambda n: r["by_kind"].get(n, [0, 0.0])[1]  # noqa: E731
        print(f"| {r['model']} | {r['batch']} | {r['graph_ms_per_step']:.3f} | {r['kernels_per_step']:.0f} | "
              f"{r['kernel_ms_per_step']:.3f} | {k('gemm'):.3f} | {k('lightning_attn'):.3f} | {k('inductor'):.3f} | {k('other'):.3f} |")


if __name__ == "__main__":
    main()
