"""Generation throughput and memory: TNL with its recurrent cache against the Transformer with a KV cache.

For each model and batch size: prefill a prompt of --prompt-len random tokens, then generate
--new-tokens tokens greedily, one forward per token through the model's public cache API:

    TNL           cache = model.new_cache(num_slots=B), rows in slots 0..B-1 (as generate()); model(ids,
                  cache=cache) -> float32 pool states [B, H, Dk, Dv] per layer (constant size), written
                  by the prefill and updated in place by lightning_attn_decode with slot_ids
    transformer   cache = model.new_cache(B, prompt + new) -> keys/values [B, H, max_len, D] per layer,
                  preallocated (static), attention over the filled part by SDPA

Both loops are the same Python code (argmax on the device, no host sync per token), the
models in --dtype (bf16 weights; TNL's state stays float32). Timing: CUDA events around the
whole generation (prefill + decode) after a short warm-up generation. tokens/s = B * new_tokens
/ time. Memory: torch.cuda.memory_allocated sampled during decoding (memory against generated
length), the peak, and the cache's own bytes; then a sweep of the generated length
(--mem-lengths) measures the peak of whole generations of each length.

CUDA graphs (--cuda-graphs, on by default on CUDA): each model's decode step (forward of one
token, the cache update, the position advance and the argmax) is captured once and replayed.
TNL's states are updated in place; the Transformer's KV cache turns static after the prefill
(``KVCache.make_static``: the length becomes a device tensor, new keys are written by
index_copy_ and attention reads all prompt + new slots with a mask, as HF's StaticCache), so
its graph step reads the whole preallocated cache while its eager step reads the filled part.

On the H200 (see benchmarks/PAPER_CLAIMS.md for the exact command):
    python benchmarks/bench_generation.py --out benchmarks/results/h200
CPU smoke test:
    python benchmarks/bench_generation.py --device cpu --preset cpu-tiny --prompt-len 32 \
        --new-tokens 32 --batch-sizes 1,2 --mem-lengths 8,16 --out /tmp/gen
Writes generation.json and generation.png into --out.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_training_speed import StepTimer, env_info, sync  # noqa: E402
from lightning_attn.baseline import Transformer, TransformerConfig  # noqa: E402
from lightning_attn.graphs import capture_graph  # noqa: E402
from lightning_attn.model import PRESETS, TNLConfig, TransNormerLLM  # noqa: E402

MODELS = ("tnl", "transformer")


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="385M", help="TNL preset; the baseline matches it")
    p.add_argument("--n-layers", type=int, default=None, help="override the preset's depth")
    p.add_argument("--models", default="tnl,transformer")
    p.add_argument("--batch-sizes", default="1,16")
    p.add_argument("--prompt-len", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=1024)
    p.add_argument("--mem-lengths", default="128,256,512",
                   help="extra generated lengths for peak memory against length (after the main runs; '' for none)")
    p.add_argument("--mem-every", type=int, default=64, help="sample memory_allocated every n decode steps")
    p.add_argument("--warmup-tokens", type=int, default=8, help="new tokens of the warm-up generation")
    p.add_argument("--max-seconds", type=float, default=90.0, help="wall-time budget; later runs are skipped")
    p.add_argument("--modes", default=None,
                   help="comma list of eager, cuda_graph, compiled_graph (default: all that --cuda-graphs and "
                        "--compile allow); eager always runs first, its tokens are the reference")
    p.add_argument("--threads", type=int, default=None)
    add_runtime_args(p, graphs_help="also run TNL's decode step as a CUDA graph (default on CUDA)",
                     compile_help="also run the decode step compiled (torch.compile) and captured, both models")
    return resolve_runtime(p.parse_args(argv))


def add_runtime_args(p, graphs_help, compile_help):
    """Options shared with bench_serving: dtype, CUDA graphs, compile, device, seed, output folder."""
    p.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"], default="auto",
                   help="model weights and KV cache (auto: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--cuda-graphs", dest="cuda_graphs", action="store_true", default=None, help=graphs_help)
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false")
    p.add_argument("--compile", action="store_true", help=compile_help)
    p.add_argument("--compile-mode", default=None,
                   help="torch.compile mode of --compile (e.g. max-autotune-no-cudagraphs; implies --compile)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/h200")


def resolve_runtime(args):
    if args.dtype == "auto":
        args.dtype = "bf16" if args.device.startswith("cuda") else "fp32"
    if args.cuda_graphs is None:
        args.cuda_graphs = args.device.startswith("cuda")
    args.compile = args.compile or args.compile_mode is not None
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # float32 matmuls of the benchmarks on tensor cores
    return args


DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build(kind, args, device):
    over = {"n_layers": args.n_layers} if args.n_layers else {}
    cfg = TNLConfig.from_preset(args.preset, **over)
    torch.manual_seed(args.seed)
    model = TransNormerLLM(cfg) if kind == "tnl" else Transformer(TransformerConfig.matching(cfg))
    model = model.to(device=device, dtype=DTYPES[args.dtype]).eval()
    if kind == "tnl":
        model.reset_buffers()  # the decay slopes back to float32 (the cast above converts buffers too)
    return model


def new_cache(model, kind, B, max_len):
    """TNL: a state pool of B slots, row b in slot b (what generate() and a serving engine use)."""
    if kind != "tnl":
        return model.new_cache(B, max_len)
    cache = model.new_cache(num_slots=B)
    cache.use_slots(torch.arange(B, dtype=torch.int32, device=model.embed.weight.device))
    return cache


def cache_bytes(cache, kind):
    if kind == "tnl":
        return cache.nbytes()
    return sum(t.numel() * t.element_size() for t in cache.k + cache.v)


def mem_now(device):
    return torch.cuda.memory_allocated() if device.startswith("cuda") else 0


@torch.no_grad()
def generate_eager(model, kind, prompts, n_new, device, mem_every=0):
    """Greedy generation through the cache API; returns tokens [B, n_new] and timings."""
    B, T = prompts.shape
    timer = StepTimer(device)
    timer.start()
    cache = new_cache(model, kind, B, T + n_new)
    logits = model(prompts, cache=cache, num_logits_to_keep=1).logits[:, -1]  # [B, V]
    timer.stop()  # prefill
    timer.start()
    out = torch.empty(B, n_new, dtype=torch.long, device=device)
    trace = []
    for i in range(n_new):
        tok = logits.argmax(dim=-1)  # [B]
        out[:, i] = tok
        if i < n_new - 1:
            logits = model(tok[:, None], cache=cache).logits[:, -1]
        if mem_every and (i % mem_every == 0 or i == n_new - 1):
            trace.append([i + 1, mem_now(device)])
    timer.stop()  # decode
    prefill_s, decode_s = timer.seconds()
    return out, {"prefill_s": prefill_s, "decode_s": decode_s, "cache_bytes": cache_bytes(cache, kind), "mem_trace": trace}


def prefill_fixed_buffers(model, kind, prompts, max_len):
    """Prefills ``prompts [B, T]`` into a new cache of ``max_len`` positions and readies it for
    fixed_buffer_step: returns (cache, tok, offset), tok [B] the first new tokens; TNL: offset
    the cache's offset copied into a fixed buffer; Transformer: offset None, the KV cache static."""
    cache = new_cache(model, kind, prompts.shape[0], max_len)
    tok = model(prompts, cache=cache, num_logits_to_keep=1).logits[:, -1].argmax(dim=-1)
    if kind == "tnl":
        return cache, tok, cache.offset.clone()
    cache.make_static()
    return cache, tok, None


def fixed_buffer_step(fwd, kind, cache, tok, offset=None):
    """One greedy decode step on fixed buffers, for graph capture: feeds ``tok [B]`` through
    ``fwd`` (the model or its compiled form) and writes the next tokens back into ``tok``. TNL:
    the cache's offset is a new tensor after every forward, so it is copied into ``offset``."""
    def step():
        if kind == "tnl":
            cache.offset = offset
        nxt = fwd(tok[:, None], cache=cache).logits[:, -1].argmax(dim=-1)
        if kind == "tnl":
            offset.copy_(cache.offset)
        tok.copy_(nxt)
    return step


@torch.no_grad()
def generate_graphed(model, kind, prompts, n_new, device, capture=True, compile_step=False, compile_mode=None):
    """Greedy generation with the decode step (forward, cache update, argmax) as one CUDA graph.

    TNL: the decode op updates each layer's state in place, so the states keep their
    addresses; the cache's position offset is a new tensor after every forward, so the graph
    copies it back into a fixed buffer. Transformer: the prefill runs eagerly, then the KV
    cache turns static (``KVCache.make_static``: length a device tensor advanced in place,
    attention over all slots with a mask). Warm-up steps change the caches: they are restored
    after the capture (which records without running). capture=False runs the same steps without a graph (a CPU check).
    compile_step: the model's forward goes through torch.compile (inductor fuses the elementwise
    work between the GEMMs) before the warm-up and the capture, for both models alike, in
    torch.compile's compile_mode (None: its default).
    """
    B, T = prompts.shape
    timer = StepTimer(device)
    timer.start()
    cache, tok, offset = prefill_fixed_buffers(model, kind, prompts, T + n_new)  # tok: the graph's input and output
    timer.stop()
    t_capture = time.perf_counter()
    saved_tok = tok.clone()
    if kind == "tnl":
        saved = [s.clone() for s in cache.states]
        saved_offset = offset.clone()
    else:
        saved_length = cache.length.clone()  # slots past it are masked and rewritten: no need to save them

    fwd = torch.compile(model, dynamic=False, mode=compile_mode) if compile_step else model
    step = fixed_buffer_step(fwd, kind, cache, tok, offset)

    def restore():
        if kind == "tnl":
            for s, s0 in zip(cache.states, saved):
                s.copy_(s0)
            offset.copy_(saved_offset)
            cache.offset = offset
        else:
            cache.length.copy_(saved_length)
        tok.copy_(saved_tok)

    if capture:
        graph, _ = capture_graph(step)
        restore()  # undoes the warm-up (the capture records without running); re-points cache.offset
        torch.cuda.synchronize()
    else:
        for _ in range(3):
            step()
        restore()
    capture_s = time.perf_counter() - t_capture
    timer.start()
    out = torch.empty(B, n_new, dtype=torch.long, device=device)
    out[:, 0] = tok
    for i in range(1, n_new):
        graph.replay() if capture else step()
        out[:, i] = tok
    timer.stop()
    prefill_s, decode_s = timer.seconds()
    return out, {"prefill_s": prefill_s, "decode_s": decode_s, "capture_s": capture_s,
                 "cache_bytes": cache_bytes(cache, kind)}


def measure(kind, mode, model, prompts, n_new, args, device, ref_tokens=None):
    B = prompts.shape[0]
    is_cuda = device.startswith("cuda")
    sync(device)
    base = mem_now(device)
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    if mode in ("cuda_graph", "compiled_graph"):
        toks, t = generate_graphed(model, kind, prompts, n_new, device, compile_step=mode == "compiled_graph",
                                   compile_mode=args.compile_mode)
    else:
        toks, t = generate_eager(model, kind, prompts, n_new, device, mem_every=args.mem_every)
    total = t["prefill_s"] + t["decode_s"]
    rec = {"model": kind, "mode": mode, "batch": B, "prompt_len": prompts.shape[1], "new_tokens": n_new,
           "prefill_s": t["prefill_s"], "decode_s": t["decode_s"], "total_s": total,
           "tokens_per_s": B * n_new / total,
           "decode_tokens_per_s": B * (n_new - 1) / t["decode_s"] if n_new > 1 else None,
           "ms_per_decode_step": 1e3 * t["decode_s"] / max(1, n_new - 1),
           "cache_mb": t["cache_bytes"] / 2**20, "status": "ok"}
    if "capture_s" in t:
        rec["capture_s"] = t["capture_s"]
    if is_cuda:
        rec["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        rec["peak_over_model_gb"] = (torch.cuda.max_memory_allocated() - base) / 2**30
        rec["model_mem_gb"] = base / 2**30
    if t.get("mem_trace"):
        rec["mem_trace_mb"] = [[i, (m - base) / 2**20] for i, m in t["mem_trace"]]  # above the weights
    if ref_tokens is not None and ref_tokens.shape == toks.shape:
        rec["tokens_match_eager"] = float((ref_tokens == toks).float().mean())
    return rec, toks


def main(argv=None):
    args = get_args(argv)
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = env_info(device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    mem_lengths = [int(n) for n in args.mem_lengths.split(",") if n.strip()]
    print(f"# generation: {info.get('gpu') or 'cpu'}, torch {info['torch']}, preset {args.preset}, "
          f"prompt {args.prompt_len}, {args.new_tokens} new tokens, batch {batch_sizes}, {args.dtype}, "
          f"cuda graphs (TNL) {args.cuda_graphs}, budget {args.max_seconds} s", flush=True)
    t_start = time.perf_counter()
    deadline = t_start + args.max_seconds
    results, model_info, sweep = [], {}, []
    g = torch.Generator().manual_seed(args.seed)
    prompts_all = torch.randint(0, 50257, (max(batch_sizes), args.prompt_len), generator=g).to(device)

    def write(partial):  # after each model too: a killed run keeps what it measured
        checks = {}
        by = {(r["model"], r["mode"], r["batch"]): r for r in results if r.get("status") == "ok"}
        for B in batch_sizes:
            for mode in ("eager", "cuda_graph", "compiled_graph"):
                t, b = by.get(("tnl", mode, B)), by.get(("transformer", mode, B))
                if t and b:
                    checks[f"tnl_{mode}_over_transformer_{mode}_B{B}"] = t["tokens_per_s"] / b["tokens_per_s"]
            # best against best over the modes both models ran: a mode skipped for one model (time
            # budget) must not pit its fastest mode against the other's slowest
            both = [m for m in ("eager", "cuda_graph", "compiled_graph")
                    if ("tnl", m, B) in by and ("transformer", m, B) in by]
            if both:
                best = max(by[("tnl", m, B)]["tokens_per_s"] for m in both)
                best_base = max(by[("transformer", m, B)]["tokens_per_s"] for m in both)
                checks[f"tnl_best_over_transformer_best_B{B}"] = best / best_base
        doc = {"benchmark": "generation", "complete": not partial, "env": info, "args": vars(args),
               "command": " ".join(["python", "benchmarks/bench_generation.py"] + (argv if argv is not None else sys.argv[1:])),
               "models": model_info, "results": results, "memory_vs_length": sweep, "checks": checks,
               "wall_s": round(time.perf_counter() - t_start, 1), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "notes": ["Transformer eager: KV cache read up to the filled length (growing shapes). Transformer "
                         "cuda_graph: static KV cache (KVCache.make_static), attention over all prompt+new slots "
                         "with a mask, as HF's StaticCache."]}
        (out_dir / "generation.json").write_text(json.dumps(doc, indent=1))
        return checks

    def skipped(kind, mode, B, n):
        return {"model": kind, "mode": mode, "batch": B, "new_tokens": n, "status": "skipped (time budget)"}

    for kind in models:
        model = build(kind, args, device)
        model_info[kind] = {"params": model.num_params(), "config": model.config.to_dict()}
        print(f"{kind}: {model.num_params() / 1e6:.1f}M params", flush=True)
        graphs = args.cuda_graphs and device.startswith("cuda")
        modes = ["eager"] + (["cuda_graph"] if graphs else []) + (["compiled_graph"] if graphs and args.compile else [])
        if args.modes:
            modes = ["eager"] + [m for m in modes[1:] if m in args.modes.split(",")]
        for B in batch_sizes:
            prompts = prompts_all[:B]
            ref = None
            for mode in modes:
                if time.perf_counter() > deadline:
                    results.append(skipped(kind, mode, B, args.new_tokens))
                    print(f"  {kind} {mode} B={B}: skipped (time budget)")
                    continue
                try:
                    measure(kind, mode, model, prompts, args.warmup_tokens, args, device)  # warm-up
                    rec, toks = measure(kind, mode, model, prompts, args.new_tokens, args, device, ref_tokens=ref)
                    if mode == "eager":
                        ref = toks
                except Exception as e:  # noqa: BLE001  (record and go on: a failed capture must not stop the sweep)
                    if device.startswith("cuda"):
                        try:
                            torch.cuda.synchronize()
                            torch.cuda.empty_cache()
                        except Exception:  # noqa: BLE001  (a broken capture can fail here too)
                            pass
                    rec = {"model": kind, "mode": mode, "batch": B, "new_tokens": args.new_tokens,
                           "status": "error", "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
                    print(f"  {kind} {mode} B={B}: {rec['error']}", flush=True)
                    results.append(rec)
                    continue
                results.append(rec)
                write(partial=True)
                extra = f", matches eager {rec['tokens_match_eager']:.3f}" if "tokens_match_eager" in rec else ""
                mem = f", peak {rec['peak_mem_gb']:.2f} GB (cache {rec['cache_mb']:.3f} MB)" if "peak_mem_gb" in rec \
                    else f", cache {rec['cache_mb']:.3f} MB"
                print(f"  {kind} {mode} B={B}: {rec['tokens_per_s']:,.0f} tok/s (prefill {rec['prefill_s'] * 1e3:.1f} ms, "
                      f"{rec['ms_per_decode_step']:.2f} ms/token step){mem}{extra}", flush=True)
        # peak memory against generated length (eager; whole generations of each length)
        for B in batch_sizes:
            for n in mem_lengths:
                if time.perf_counter() > deadline:
                    sweep.append(skipped(kind, "eager", B, n))
                    continue
                try:
                    rec, _ = measure(kind, "eager", model, prompts_all[:B], n, args, device)
                    rec.pop("mem_trace_mb", None)
                except Exception as e:  # noqa: BLE001
                    rec = {"model": kind, "mode": "eager", "batch": B, "new_tokens": n, "status": "error",
                           "error": f"{type(e).__name__}: {str(e)[:300]}"}
                sweep.append(rec)
            write(partial=True)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    wall = time.perf_counter() - t_start
    # the main runs at --new-tokens join the length sweep as its last point
    for r in results:
        if r.get("status") == "ok" and r["mode"] == "eager":
            sweep.append({k: v for k, v in r.items() if k != "mem_trace_mb"})
    checks = write(partial=False)
    made_png = plot(results, sweep, models, batch_sizes, out_dir / "generation.png",
                    f"{args.preset}, prompt {args.prompt_len}, {args.dtype}; {info.get('gpu') or 'cpu'}, torch {info['torch']}")

    print()
    print("| model | mode | B | tokens/s | ms per decode step | prefill ms | cache MB | peak GB |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        if r.get("status") != "ok":
            print(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['status']} | - | - | - | - |")
            continue
        peak = f"{r['peak_mem_gb']:.2f}" if "peak_mem_gb" in r else "-"
        print(f"| {r['model']} | {r['mode']} | {r['batch']} | {r['tokens_per_s']:,.0f} | {r['ms_per_decode_step']:.2f} | "
              f"{r['prefill_s'] * 1e3:.1f} | {r['cache_mb']:.3f} | {peak} |")
    print()
    print("peak memory (GB, CUDA) / cache MB against generated length:")
    for kind in models:
        for B in batch_sizes:
            pts = sorted((r for r in sweep if r["model"] == kind and r["batch"] == B and r.get("status") == "ok"),
                         key=lambda r: r["new_tokens"])
            cells = ", ".join(f"{r['new_tokens']}: {r.get('peak_mem_gb', float('nan')):.3f} / {r['cache_mb']:.3f}" for r in pts)
            print(f"  {kind} B={B}: {cells}")
    for k, v in checks.items():
        print(f"{k}: {v:.3f}")
    print(f"wall {wall:.1f} s; wrote {out_dir / 'generation.json'}" + (f", {out_dir / 'generation.png'}" if made_png else ""))


def plot(results, sweep, models, batch_sizes, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    ok = [r for r in results if r.get("status") == "ok"]
    labels = [f"{r['model']} {r['mode']}\nB={r['batch']}" for r in ok]
    ax1.bar(range(len(ok)), [r["tokens_per_s"] for r in ok], color=["C0" if r["model"] == "tnl" else "C1" for r in ok])
    ax1.set_xticks(range(len(ok)), labels, fontsize=7)
    ax1.set_ylabel("generated tokens / s")
    ax1.set_yscale("log")
    ax1.grid(alpha=0.3, axis="y")
    use_peak = any("peak_mem_gb" in r for r in sweep)
    for kind in models:
        for B in batch_sizes:
            pts = sorted((r for r in sweep if r["model"] == kind and r["batch"] == B and r.get("status") == "ok"),
                         key=lambda r: r["new_tokens"])
            if not pts:
                continue
            ys = [r["peak_over_model_gb"] * 1024 if use_peak else r["cache_mb"] for r in pts]
            ax2.plot([r["new_tokens"] for r in pts], ys, ("o" if kind == "tnl" else "s") + ("-" if B == batch_sizes[-1] else ":"),
                     color="C0" if kind == "tnl" else "C1", label=f"{kind} B={B}")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("generated tokens")
    ax2.set_ylabel("peak memory above the weights (MiB)" if use_peak else "cache size (MiB)")
    ax2.set_yscale("log")
    ax2.grid(alpha=0.3, which="both")
    if ax2.get_lines():
        ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


if __name__ == "__main__":
    main()
