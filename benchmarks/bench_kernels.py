"""Kernel benchmark: lightning_attn's CUDA ops beside the peers, on one GPU, in one process.

Providers (each in its native layout, same random inputs):
  ours           lightning_attn_func ([B, T, H, D])
  fla_chunk      flash-linear-attention chunk_simple_gla(g_gamma=-slope)   (if importable)
  official_loop  OpenNLPLab lightning_attn2 ([B, H, T, D])                   (if importable)
  sdpa           torch SDPA, causal softmax attention ([B, H, T, D]), T <= 64K
Roofline: the least bytes (fwd: read q, k, v, write o; bwd adds read q, k, v, do and
write dq, dk, dv) over the measured device-to-device copy bandwidth.
Times: triton.testing.do_bench medians. Inputs are >= 256 MB per tensor at the main
shapes (several times the 60 MB L2), so they are not rotated.

Usage: python benchmarks/bench_kernels.py [--quick] [--peers DIR] [--out DIR]
Writes kernels.json and kernels.png into --out (default benchmarks/results/h200).
"""
import argparse
import json
import math
import os
import platform
import sys
import time

import torch
import triton.testing

import lightning_attn as la
from lightning_attn.graphs import capture_graph

H = 16


def copy_bandwidth():
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    y = torch.empty_like(x)
    ms = triton.testing.do_bench(lambda: y.copy_(x), return_mode="median")
    return 2 * x.numel() / (ms * 1e-3)


def load_peers(peer_dir):
    peers = {}
    if peer_dir and os.path.isdir(peer_dir):
        sys.path.insert(0, peer_dir)
    try:
        from fla.ops.simple_gla import chunk_simple_gla, fused_recurrent_simple_gla
        peers["fla_chunk"] = chunk_simple_gla
        peers["fla_recurrent"] = fused_recurrent_simple_gla
    except Exception as e:  # noqa: BLE001
        print("FLA not available:", repr(e)[:200])
    try:  # the official package is also called lightning_attn: load it under another name
        import importlib.util
        root = os.path.join(peer_dir or "", "official_lightning_attn")
        spec = importlib.util.spec_from_file_location(
            "official_lightning_attn", os.path.join(root, "__init__.py"), submodule_search_locations=[root])
        mod = importlib.util.module_from_spec(spec)
        sys.modules["official_lightning_attn"] = mod
        spec.loader.exec_module(mod)
        # (its ops.triton package re-exports the name `triton`, so go through the module path)
        peers["official_loop"] = importlib.import_module(
            "official_lightning_attn.ops.triton.lightning_attn2").lightning_attn2
    except Exception as e:  # noqa: BLE001
        print("official lightning_attn not available:", repr(e)[:200])
    return peers


def make(B, T, Dk, Dv, dtype=torch.bfloat16, head_first=False, grad=False):
    shape = (lambda D: (B, H, T, D)) if head_first else (lambda D: (B, T, H, D))
    q = (torch.randn(shape(Dk), device="cuda") * Dk ** -0.5).to(dtype)
    k = (torch.randn(shape(Dk), device="cuda") * 0.5).to(dtype)
    v = torch.randn(shape(Dv), device="cuda").to(dtype)
    return [x.requires_grad_(grad) for x in (q, k, v)]


def provider_fn(name, peers, q, k, v, slope):
    if name == "ours":
        return lambda: la.lightning_attn_func(q, k, v, slope)[0]
    if name == "fla_chunk":
        f = peers["fla_chunk"]
        g = -slope
        return lambda: f(q, k, v, g_gamma=g, scale=1.0)[0]
    if name == "official_loop":
        f = peers["official_loop"]
        s = slope.view(H, 1, 1).contiguous()
        return lambda: f(q, k, v, s)
    if name == "sdpa":
        return lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    raise KeyError(name)


NATIVE_HEAD_FIRST = {"ours": False, "fla_chunk": False, "official_loop": True, "sdpa": True}


def bench_case(name, peers, mode, B, T, Dk, Dv, slope):
    head_first = NATIVE_HEAD_FIRST[name]
    q, k, v = make(B, T, Dk, Dv, head_first=head_first, grad=(mode == "fwd+bwd"))
    f = provider_fn(name, peers, q, k, v, slope)
    if mode == "fwd":
        fn = f
    else:
        do = torch.randn_like(v)

        def fn():
            o = f()
            return torch.autograd.grad(o, (q, k, v), do)
    fn()  # compile / autotune outside the timing and the memory count
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    del out
    ms = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
    return ms, extra / 2**20


def roofline_ms(mode, B, T, Dk, Dv, bw):
    per_tok = (2 * Dk + 2 * Dv) + ((4 * Dk + 3 * Dv) if mode == "fwd+bwd" else 0)
    return B * T * H * per_tok * 2 / bw * 1e3


def bench_decode(peers, Bs, bw, results):
    Dk = Dv = 128
    for B in Bs:
        q, k, v = (torch.randn(B, H, D, device="cuda").to(torch.bfloat16) for D in (Dk, Dk, Dv))
        slope = torch.rand(H, device="cuda") * 0.1
        state = torch.randn(B, H, Dk, Dv, device="cuda")
        row = {"B": B, "roofline_us": B * H * Dk * Dv * 8 / bw * 1e6}
        row["ours_us"] = 1e3 * triton.testing.do_bench(
            lambda: la.lightning_attn_decode(q, k, v, state, slope), return_mode="median")
        # GPU time per step from a CUDA-graph replay of 100 steps.
        g, _ = capture_graph(lambda: [la.lightning_attn_decode(q, k, v, state, slope) for _ in range(100)], warmup=1)
        row["ours_graph_us"] = 1e3 * triton.testing.do_bench(g.replay, return_mode="median") / 100
        lam = torch.exp(-slope).view(1, H, 1, 1)

        def plain():
            state.mul_(lam).add_(k.float().unsqueeze(-1) * v.float().unsqueeze(-2))
            return torch.einsum("bhk,bhkv->bhv", q.float(), state)
        row["torch_us"] = 1e3 * triton.testing.do_bench(plain, return_mode="median")
        if "fla_recurrent" in peers:
            f = peers["fla_recurrent"]
            q1, k1, v1 = (x.unsqueeze(1) for x in (q, k, v))  # [B, 1, H, D]
            try:
                f(q1, k1, v1, g_gamma=-slope, scale=1.0, initial_state=state, output_final_state=True)
                row["fla_recurrent_us"] = 1e3 * triton.testing.do_bench(
                    lambda: f(q1, k1, v1, g_gamma=-slope, scale=1.0, initial_state=state,
                              output_final_state=True), return_mode="median")
            except Exception as e:  # noqa: BLE001
                print("fla decode failed:", repr(e)[:200])
        results.append(row)
        print("decode", row, flush=True)


def plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no plot")
        return
    colors = {"ours": "C0", "fla_chunk": "C1", "official_loop": "C2", "sdpa": "C3", "roofline": "k"}
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, mode in zip(axes, ["fwd", "fwd+bwd"]):
        rows = [r for r in results if r["mode"] == mode and r["Dk"] == 128 and r["Dv"] == 128]
        provs = sorted({p for r in rows for p in r["ms"]} | {"roofline"})
        for p in provs:
            pts = sorted((r["T"], (r["roofline_ms"] if p == "roofline" else r["ms"].get(p)) * 1e6 / (r["B"] * r["T"]))
                         for r in rows if p == "roofline" or p in r["ms"])
            if pts:
                ax.plot([t for t, _ in pts], [y for _, y in pts], marker="o", label=p,
                        color=colors.get(p), linestyle="--" if p == "roofline" else "-")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T (tokens per sequence)")
        ax.set_ylabel("ns per token (H=16, D=128, bf16)")
        ax.set_title(f"{mode}, H200")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="ours only, a few shapes")
    ap.add_argument("--peers", default="/tmp/peers")
    ap.add_argument("--out", default="benchmarks/results/h200")
    ap.add_argument("--max-tokens-sdpa", type=int, default=65536)
    ap.add_argument("--plot-only", action="store_true", help="replot kernels.json in --out")
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--main-table-only", action="store_true",
                    help="only the 65,536-token table at Dk = Dv = 128 (no B = 1 long rows, other head dims, decode)")
    ap.add_argument("--Ts", type=int, nargs="+", help="sequence lengths of the 65,536-token table")
    ap.add_argument("--name", default="kernels", help="output file stem (NAME.json, NAME.png)")
    ap.add_argument("--decode-only", action="store_true", help="only the decoding table (use with --name)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    if args.plot_only:
        with open(os.path.join(args.out, f"{args.name}.json")) as f:
            plot(json.load(f)["chunked"], os.path.join(args.out, f"{args.name}.png"))
        return
    torch.manual_seed(0)
    peers = {} if args.quick else load_peers(args.peers)
    bw = copy_bandwidth()
    header = {"gpu": torch.cuda.get_device_name(), "cuda": torch.version.cuda, "torch": torch.__version__,
              "python": platform.python_version(), "copy_bandwidth_TBps": bw / 1e12,
              "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    print(header, flush=True)
    slope = (torch.rand(H, device="cuda") * 0.2 + 0.01)
    provs = ["ours"] + [p for p in ("fla_chunk", "official_loop") if p in peers] + ([] if args.quick else ["sdpa"])
    cases = []  # (mode, B, T, Dk, Dv, providers)
    Ts = args.Ts or ([1024, 4096, 16384, 65536] if args.quick else [1024, 2048, 4096, 8192, 16384, 32768, 65536])
    for mode in [] if args.decode_only else args.modes:
        for T in Ts:
            cases.append((mode, 65536 // T, T, 128, 128, provs))
        if args.main_table_only:
            continue
        for T in ([1 << 20] if args.quick else [1 << 17, 1 << 18, 1 << 20]):
            cases.append((mode, 1, T, 128, 128, [p for p in provs if p in ("ours", "fla_chunk")]))
        for Dk, Dv in ((64, 64), (256, 128)):
            for T in (4096, 65536):
                cases.append((mode, 65536 // T, T, Dk, Dv, [p for p in provs if p in ("ours", "fla_chunk")]))
    decode = []
    if not args.main_table_only:
        bench_decode(peers, [1, 8, 64, 256], bw, decode)  # first: quick, and kept if a long run is cut short
    results = []
    for mode, B, T, Dk, Dv, ps in cases:
        row = {"mode": mode, "B": B, "T": T, "H": H, "Dk": Dk, "Dv": Dv,
               "roofline_ms": roofline_ms(mode, B, T, Dk, Dv, bw), "ms": {}, "extra_MB": {}}
        for p in ps:
            if p == "sdpa" and (T > args.max_tokens_sdpa or Dk != Dv):
                continue
            if p == "official_loop" and (T > 65536 or Dk != Dv):
                continue
            try:
                t_case = time.perf_counter()
                ms, mb = bench_case(p, peers, mode, B, T, Dk, Dv, slope)
                row["ms"][p], row["extra_MB"][p] = ms, mb
                row.setdefault("bench_wall_s", {})[p] = round(time.perf_counter() - t_case, 1)  # autotune shows here
            except Exception as e:  # noqa: BLE001
                print(f"{p} failed at {mode} B{B} T{T} Dk{Dk} Dv{Dv}: {repr(e)[:300]}", flush=True)
            torch.cuda.empty_cache()
        results.append(row)
        print(json.dumps(row), flush=True)
        with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:  # partial results survive a timeout
            json.dump({"header": header, "chunked": results, "decode": decode}, f, indent=1)
    with open(os.path.join(args.out, f"{args.name}.json"), "w") as f:
        json.dump({"header": header, "chunked": results, "decode": decode}, f, indent=1)
    if results:
        plot(results, os.path.join(args.out, f"{args.name}.png"))

    print("\nmode     B      T       Dk  Dv  roofline  " + "  ".join(f"{p:>13}" for p in provs) + "   ours/roof")
    for r in results:
        cells = "  ".join(f"{r['ms'][p]:13.3f}" if p in r["ms"] else f"{'-':>13}" for p in provs)
        ratio = r["ms"].get("ours", math.nan) / r["roofline_ms"]
        print(f"{r['mode']:8} {r['B']:<6} {r['T']:<7} {r['Dk']:<3} {r['Dv']:<3} {r['roofline_ms']:8.3f}  {cells}   {ratio:5.2f}")
    print("\ndecode B  roofline_us  ours_us  ours_graph_us  torch_us  fla_us")
    for r in decode:
        print(f"{r['B']:<8} {r['roofline_us']:11.1f} {r['ours_us']:8.1f} {r['ours_graph_us']:14.1f} "
              f"{r['torch_us']:9.1f} {r.get('fla_recurrent_us', math.nan):7.1f}")


if __name__ == "__main__":
    main()
