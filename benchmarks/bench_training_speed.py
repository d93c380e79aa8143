"""Training speed at a fixed number of tokens per step: TNL against the same-size Transformer.

The paper's constant-speed figure (TNL-LA2 flat in the sequence length, LLaMA-FA2 falling):
tokens per second per GPU of a full training step (forward, loss, backward, AdamW step, with
gradient clipping as examples/train_tnl.py does) at sequence lengths T = 1K .. 128K, with
B = tokens_per_step // T sequences per step (B >= 1), plus the peak memory of each point.

    TNL           lightning_attn.model.TransNormerLLM (lightning_attn_func, SRMSNorm, SGLU)
    transformer   lightning_attn.baseline.Transformer, TransformerConfig.matching(tnl): LLaMA-style,
                  causal softmax attention through SDPA (flash backend on the GPU), RoPE, SwiGLU

Both models: fp32 master weights, bf16 autocast, fused AdamW (on CUDA), random token ids (the
speed does not depend on the data). torch.compile is on by default, per block ("regional"
compilation: one compiled block serves every layer of the model, so a sweep pays a few compiles,
not one per layer; compiled with dynamic shapes, so one compile serves every T, plus one for B == 1).
The loss (--loss fused, default; the same for both models) is lightning_attn.loss.linear_cross_entropy:
chunks of tokens, so the [B*T, V] logits and their gradient (13 GB each in bf16 at 128K tokens)
never exist; --loss logits is the previous way (bf16 logits + one compiled cross-entropy).
A point that runs out of memory is retried with selective activation checkpointing: the first
eighth, quarter, half, then all of the blocks (the point records how many). Timing: CUDA events around each timed step after
the warm-up steps (the first warm-up step pays the compile); tokens/s = tokens per step / median
step time. A point still out of memory is recorded as OOM and the sweep goes on.

Time budget (--max-seconds): the models run one after the other (the first gets
--budget-split of the budget, the rest carries over); a point starts only when time is left,
and its timed steps are cut to fit (at least one). Points left out are recorded as skipped.

On the H200 (see benchmarks/PAPER_CLAIMS.md for the exact command):
    python benchmarks/bench_training_speed.py --out benchmarks/results/h200
CPU smoke test:
    python benchmarks/bench_training_speed.py --device cpu --preset cpu-tiny --seq-lens 64,128,256 \
        --tokens-per-step 512 --no-compile --out /tmp/speed
Writes training_speed.json and training_speed.png into --out.
"""
import argparse
import gc
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lightning_attn.baseline import Transformer, TransformerConfig  # noqa: E402
from lightning_attn.model import PRESETS, TNLConfig, TransNormerLLM  # noqa: E402

MODELS = ("tnl", "transformer")
DYNAMIC = {"true": True, "auto": None, "false": False}
DEFAULT_SEQ_LENS = "1024,2048,4096,8192,16384,32768,65536,131072"


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="385M", help="TNL preset; the baseline matches it")
    p.add_argument("--n-layers", type=int, default=None, help="override the preset's depth (a smaller fallback)")
    p.add_argument("--models", default="tnl,transformer", help="comma list of: " + ",".join(MODELS))
    p.add_argument("--seq-lens", default=DEFAULT_SEQ_LENS, help="comma list of sequence lengths")
    p.add_argument("--tokens-per-step", type=int, default=65536,
                   help="B = tokens_per_step // T; T above it runs at B = 1 (then T tokens per step, recorded)")
    p.add_argument("--warmup-steps", type=int, default=1,
                   help="untimed steps per point (up to 2 more while steps are much slower than expected: compiles)")
    p.add_argument("--timed-steps", type=int, default=3, help="timed steps per point (fewer if the budget says so)")
    p.add_argument("--point-seconds", type=float, default=10.0, help="at most this long in timed steps per point (at least one)")
    p.add_argument("--max-seconds", type=float, default=200.0, help="wall-time budget of the whole sweep")
    p.add_argument("--budget-split", type=float, default=0.45, help="share of the budget for the first model (the rest carries over)")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="eager mode")
    p.add_argument("--compile-scope", choices=["blocks", "model"], default="blocks",
                   help="compile each block (regional, fast to compile) or the whole model")
    p.add_argument("--dynamic", choices=["true", "auto", "false"], default="true",
                   help="compile with dynamic shapes from the start (true: one compile serves every T, plus one for B == 1),"
                        " Dynamo's automatic dynamic (auto), or static shapes (false: a compile per point)")
    p.add_argument("--grad-ckpt", action="store_true", help="activation checkpointing per block at every point (both models)")
    p.add_argument("--no-ckpt-on-oom", dest="ckpt_on_oom", action="store_false",
                   help="do not retry a point that runs out of memory with activation checkpointing")
    p.add_argument("--loss", choices=["fused", "logits"], default="fused",
                   help="fused: the models' linear_cross_entropy (no [B, T, V] logits); logits: logits + compiled CE")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                   help="autocast dtype (fp32: none; auto: bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="CPU threads")
    p.add_argument("--out", default="benchmarks/results/h200")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.dtype == "auto":
        args.dtype = "bf16" if args.device.startswith("cuda") else "fp32"
    return args


# ----------------------------------------------------------------------------- environment


def env_info(device: str) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "host": platform.node()}
    if device.startswith("cuda"):
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                    gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
        try:
            import triton
            info["triton"] = triton.__version__
        except ImportError:
            pass
    else:
        info.update(gpu=None, cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    try:
        root = Path(__file__).resolve().parent.parent
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                            text=True, timeout=10).stdout.strip()
        info["git_dirty"] = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                                                capture_output=True, text=True, timeout=10).stdout.strip())
    except Exception:  # noqa: BLE001
        pass
    return info


def set_recompile_limits(n: int = 64) -> None:
    """Shapes change at every point: let Dynamo keep enough compiled variants."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), n))


class StepTimer:
    """Per-step wall time: CUDA events on the GPU, perf_counter on the CPU."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.marks = []

    def start(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks.append([ev, None])
        else:
            self.marks.append([time.perf_counter(), None])

    def stop(self):
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            self.marks[-1][1] = ev
        else:
            self.marks[-1][1] = time.perf_counter()

    def seconds(self):
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in self.marks]
        return [b - a for a, b in self.marks]


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------- models


def build(kind: str, args, device: str):
    over = {"n_layers": args.n_layers} if args.n_layers else {}
    cfg = TNLConfig.from_preset(args.preset, gradient_checkpointing=args.grad_ckpt, **over)
    torch.manual_seed(args.seed)
    model = TransNormerLLM(cfg) if kind == "tnl" else Transformer(TransformerConfig.matching(cfg))
    model = model.to(device)
    model.train()
    fused = {"fused": True} if device.startswith("cuda") else {}
    opt = torch.optim.AdamW(model.param_groups(0.1), lr=args.lr, betas=(0.9, 0.95), **fused)
    if args.compile:
        dyn = DYNAMIC[args.dynamic]
        if args.compile_scope == "blocks":
            for block in model.blocks:
                block.compile(dynamic=dyn)  # in place; the same code object serves every layer
            runner = model
        else:
            runner = torch.compile(model, dynamic=dyn)
    else:
        runner = model
    return model, runner, opt


def _cross_entropy(logits, targets):
    return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), targets.reshape(-1))


def train_step(runner, model, opt, loss_fn, x, y, autocast):
    with autocast():
        if loss_fn is None:  # --loss fused: the model's linear_cross_entropy, no [B, T, V] logits
            loss = runner(x, labels=y, return_logits=False).loss
        else:
            logits = runner(x).logits  # [B, T, V] in the autocast dtype
    if loss_fn is not None:
        loss = loss_fn(logits, y)
        del logits
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


# ----------------------------------------------------------------------------- sweep


def run_point(kind, T, args, model, runner, opt, loss_fn, deadline, device, expect=None):
    """One sequence length: warm-up, timed steps, peak memory. expect: the predicted step seconds."""
    B = max(1, args.tokens_per_step // T)
    tokens = B * T
    rec = {"model": kind, "seq_len": T, "batch": B, "tokens_per_step": tokens}
    V = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(args.seed + T)
    ids = torch.randint(0, V, (B, T + 1), generator=g).to(device)
    x, y = ids[:, :-1], ids[:, 1:]
    autocast = ((lambda: torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16))
                if args.dtype == "bf16" else (lambda: torch.autocast(device_type=device.split(":")[0], enabled=False)))
    is_cuda = device.startswith("cuda")
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    warm = []
    # warm-up: --warmup-steps, plus up to 2 more while the last step still looks like a compile
    # (the model's first point; B == 1, which dynamic shapes specialise; anything 1.5x slower than expected)
    while True:
        t0 = time.perf_counter()
        train_step(runner, model, opt, loss_fn, x, y, autocast)
        sync(device)
        warm.append(time.perf_counter() - t0)
        est = warm[-1] if expect is None else min(warm[-1], 1.5 * expect)
        if time.perf_counter() + est > deadline:
            break  # out of time: go straight to (one) timed step
        if len(warm) < max(1, args.warmup_steps):
            continue
        compiling = (len(warm) == 1) if expect is None else warm[-1] > 1.5 * expect
        if not compiling or len(warm) >= max(1, args.warmup_steps) + 2:
            break
    rec["warmup_s"] = [round(w, 3) for w in warm]
    step_est = warm[-1]
    left = deadline - time.perf_counter()
    n = max(1, min(args.timed_steps, int(min(0.8 * left, args.point_seconds) / max(step_est, 1e-6))))
    if is_cuda:
        torch.cuda.reset_peak_memory_stats()
    timer = StepTimer(device)
    for _ in range(n):
        timer.start()
        loss = train_step(runner, model, opt, loss_fn, x, y, autocast)
        timer.stop()
    times = timer.seconds()
    rec["loss"] = float(loss.detach().float().item())
    times_sorted = sorted(times)
    med = times_sorted[len(times) // 2] if len(times) % 2 else 0.5 * sum(times_sorted[len(times) // 2 - 1: len(times) // 2 + 1])
    rec.update(status="ok", timed_steps=n, step_s=[round(t, 5) for t in times], median_step_s=med,
               tokens_per_s=tokens / med)
    if is_cuda:
        rec["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
        rec["peak_reserved_gb"] = torch.cuda.max_memory_reserved() / 2**30
    return rec


def attempt(kind, T, args, model, runner, opt, loss_fn, deadline, device, expect):
    """run_point with errors caught: (record, None) or (None, error text starting "OOM" or "error")."""
    try:
        rec = run_point(kind, T, args, model, runner, opt, loss_fn, deadline, device, expect=expect)
        rec["grad_ckpt"] = bool(model.config.gradient_checkpointing)
        if rec["grad_ckpt"]:
            rec["checkpoint_layers"] = model.config.checkpoint_layers or model.config.n_layers
        return rec, None
    except Exception as e:  # noqa: BLE001  (one failed point must not lose the sweep)
        text = str(e).strip().split("\n")
        oom = isinstance(e, torch.OutOfMemoryError) or "out of memory" in str(e).lower()
        err = ("OOM: " if oom else f"error: {type(e).__name__}: ") + (text[0][:300] if text else "")
        if not oom:
            import traceback
            traceback.print_exc(limit=4)
    opt.zero_grad(set_to_none=True)
    free_memory(device)
    return None, err


def free_memory(device):
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def sweep(args, on_update=lambda results, model_info: None):
    device = args.device
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_recompile_limits()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    for m in models:
        if m not in MODELS:
            raise SystemExit(f"--models: unknown model {m!r}; choose from {MODELS}")
    seq_lens = [int(s) for s in args.seq_lens.split(",")]
    t_start = time.perf_counter()
    hard_deadline = t_start + args.max_seconds
    loss_fn = None if args.loss == "fused" else (
        torch.compile(_cross_entropy, dynamic=DYNAMIC[args.dynamic]) if args.compile else _cross_entropy)
    results, model_info = [], {}
    for mi, kind in enumerate(models):
        if mi == 0 and len(models) > 1:
            deadline = t_start + args.budget_split * args.max_seconds
        else:
            deadline = hard_deadline
        t_build = time.perf_counter()
        model, runner, opt = build(kind, args, device)
        model_info[kind] = {"params": model.num_params(), "config": model.config.to_dict(),
                            "build_s": round(time.perf_counter() - t_build, 2)}
        print(f"{kind}: {model.num_params() / 1e6:.1f}M params, built in {model_info[kind]['build_s']} s", flush=True)
        last = None  # (T, step seconds, tokens per step) of this model's previous point, to predict the next one
        for T in seq_lens:
            now = time.perf_counter()
            pred = 0.0
            if last is not None:  # softmax attention's cost per token grows with T; lightning's should not
                tokens_ratio = max(1, args.tokens_per_step // T) * T / last[2]
                pred = (max(1, args.warmup_steps) + 1) * last[1] * tokens_ratio * (T / last[0] if kind == "transformer" else 1.0)
            if now > deadline - 1.0 or now + pred > deadline + 15.0:
                results.append({"model": kind, "seq_len": T, "batch": max(1, args.tokens_per_step // T),
                                "tokens_per_step": max(1, args.tokens_per_step // T) * T, "status": "skipped (time budget)"})
                print(f"  {kind} T={T}: skipped (time budget)", flush=True)
                on_update(results, model_info)
                continue
            t0 = time.perf_counter()
            expect = pred / (max(1, args.warmup_steps) + 1) if last else None
            rec, err = attempt(kind, T, args, model, runner, opt, loss_fn, deadline, device, expect)
            if err is not None and err.startswith("OOM") and args.ckpt_on_oom and not args.grad_ckpt:
                # selective checkpointing: recompute as few blocks as memory needs (1/8, 1/4, 1/2, all)
                L = model.config.n_layers
                first = err
                for n_ckpt in sorted({max(1, L // 8), max(1, L // 4), max(1, L // 2), L}):
                    if time.perf_counter() > deadline:
                        break
                    print(f"  {kind} T={T}: {err[:80]}; retrying with {n_ckpt}/{L} blocks checkpointed", flush=True)
                    model.config.gradient_checkpointing, model.config.checkpoint_layers = True, n_ckpt
                    rec, err2 = attempt(kind, T, args, model, runner, opt, loss_fn, deadline, device, None)
                    model.config.gradient_checkpointing, model.config.checkpoint_layers = False, None
                    if rec is not None:
                        rec["first_attempt"] = first
                        err = None
                        break
                    err = f"{first}; with {n_ckpt}/{L} blocks checkpointed: {err2}"
                    if not err2.startswith("OOM"):
                        break
            if err is not None:
                B = max(1, args.tokens_per_step // T)
                rec = {"model": kind, "seq_len": T, "batch": B, "tokens_per_step": B * T,
                       "status": "OOM" if err.startswith("OOM") else "error", "error": err}
            rec["point_wall_s"] = round(time.perf_counter() - t0, 2)
            results.append(rec)
            on_update(results, model_info)
            if rec["status"] == "ok":
                last = (T, rec["median_step_s"], rec["tokens_per_step"])
            if rec["status"] == "ok":
                mem = f", peak {rec['peak_mem_gb']:.1f} GB" if "peak_mem_gb" in rec else ""
                print(f"  {kind} T={T} B={rec['batch']}: {rec['tokens_per_s']:,.0f} tok/s "
                      f"({rec['median_step_s'] * 1e3:.1f} ms/step, {rec['timed_steps']} timed, warm-up {rec['warmup_s']} s)"
                      f"{mem}  [{rec['point_wall_s']} s]", flush=True)
            else:
                print(f"  {kind} T={T}: {rec['status']}  [{rec['point_wall_s']} s]", flush=True)
        del model, runner, opt
        free_memory(device)
        if args.compile:
            torch._dynamo.reset()
    return results, model_info, time.perf_counter() - t_start


# ----------------------------------------------------------------------------- report


def summarise(results, models):
    by = {(r["model"], r["seq_len"]): r for r in results}
    seq_lens = sorted({r["seq_len"] for r in results})

    def tps(m, T):
        r = by.get((m, T))
        return r["tokens_per_s"] if r and r.get("status") == "ok" else None

    checks = {}
    if "tnl" in models and seq_lens:
        lo, hi = seq_lens[0], seq_lens[-1]
        a, b = tps("tnl", lo), tps("tnl", hi)
        if a and b:
            checks[f"tnl_tps_T{hi}_over_T{lo}"] = b / a
    if "tnl" in models and "transformer" in models:
        for T in seq_lens:
            a, b = tps("tnl", T), tps("transformer", T)
            if a and b:
                checks[f"tnl_over_transformer_T{T}"] = a / b
    return checks


def fmt_table(results, models):
    """Markdown table; "(ckpt)": that point ran with activation checkpointing (after an OOM)."""
    by = {(r["model"], r["seq_len"]): r for r in results}
    any_ckpt_all = all(r.get("grad_ckpt") for r in results if r.get("status") == "ok")
    seq_lens = sorted({r["seq_len"] for r in results})
    head = "| T | B | tokens/step |" + "".join(f" {m} tok/s | {m} peak GB |" for m in models)
    if len(models) == 2:
        head += f" {models[0]}/{models[1]} |"
    lines = [head, "|" + "---|" * (3 + 2 * len(models) + (1 if len(models) == 2 else 0))]
    for T in seq_lens:
        r0 = next((by[(m, T)] for m in models if (m, T) in by), {})
        row = f"| {T} | {r0.get('batch', '')} | {r0.get('tokens_per_step', '')} |"
        vals = []
        for m in models:
            r = by.get((m, T))
            if r is None:
                row += " - | - |"
                vals.append(None)
            elif r.get("status") != "ok":
                row += f" {r['status']} | - |"
                vals.append(None)
            else:
                mem = f"{r['peak_mem_gb']:.1f}" if "peak_mem_gb" in r else "-"
                star = " (ckpt)" if r.get("grad_ckpt") and not any_ckpt_all else ""
                row += f" {r['tokens_per_s']:,.0f}{star} | {mem} |"
                vals.append(r["tokens_per_s"])
        if len(models) == 2:
            row += f" {vals[0] / vals[1]:.2f} |" if all(vals) else " - |"
        lines.append(row)
    return "\n".join(lines)


def plot(results, models, path, title):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not available: no plot")
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for m in models:
        pts = sorted((r for r in results if r["model"] == m), key=lambda r: r["seq_len"])
        ok = [r for r in pts if r.get("status") == "ok"]
        label = {"tnl": "TNL (lightning attention)", "transformer": "Transformer (SDPA)"}.get(m, m)
        line, = ax1.plot([r["seq_len"] for r in ok], [r["tokens_per_s"] for r in ok], "o-", label=label)
        ck = [r for r in ok if r.get("grad_ckpt")]
        if ck:  # hollow markers: points that needed activation checkpointing
            ax1.plot([r["seq_len"] for r in ck], [r["tokens_per_s"] for r in ck], "o", mfc="white",
                     color=line.get_color(), label=f"{label}, activation checkpointing")
        if ok and "peak_mem_gb" in ok[0]:
            ax2.plot([r["seq_len"] for r in ok], [r["peak_mem_gb"] for r in ok], "o-", label=label, color=line.get_color())
        for r in pts:
            if r.get("status") != "ok":
                ax1.annotate(r["status"].split(" ")[0], (r["seq_len"], 0), textcoords="offset points",
                             xytext=(0, 5 + 10 * models.index(m)), ha="center", fontsize=7, color=line.get_color())
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length T (B = tokens per step // T, at least 1)")
        ax.grid(alpha=0.3, which="both")
        if ax.get_lines():
            ax.legend()
    ax1.set_ylabel("training tokens / s / GPU")
    ax1.set_ylim(bottom=0)
    ax2.set_ylabel("peak memory allocated (GiB)" if ax2.get_lines() else "peak memory: measured on CUDA only")
    ax2.set_ylim(bottom=0)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return True


def main(argv=None):
    args = get_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    info = env_info(args.device)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    print(f"# training speed: {info.get('gpu') or 'cpu'}, torch {info['torch']}, cuda {info.get('cuda')}, "
          f"preset {args.preset}, {args.tokens_per_step} tokens/step, compile={args.compile} ({args.compile_scope}), "
          f"dtype {args.dtype}, budget {args.max_seconds} s", flush=True)
    t0 = time.perf_counter()

    def write(results, model_info, complete=False):  # after every point: a killed run keeps what it measured
        doc = {"benchmark": "training_speed", "complete": complete, "env": info, "args": vars(args),
               "command": " ".join(["python", "benchmarks/bench_training_speed.py"] + (argv if argv is not None else sys.argv[1:])),
               "models": model_info, "results": results, "checks": summarise(results, models),
               "wall_s": round(time.perf_counter() - t0, 1), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (out / "training_speed.json").write_text(json.dumps(doc, indent=1))

    results, model_info, wall = sweep(args, write)
    write(results, model_info, complete=True)
    checks = summarise(results, models)
    title = (f"{args.preset}{'' if not args.n_layers else f' ({args.n_layers} layers)'}, {args.tokens_per_step} tokens/step, "
             f"{args.dtype}, compile={args.compile}; {info.get('gpu') or 'cpu'}, torch {info['torch']}")
    made_png = plot(results, models, out / "training_speed.png", title)
    print()
    print(fmt_table(results, models))
    for k, v in checks.items():
        print(f"{k}: {v:.3f}")
    print(f"wall {wall:.1f} s; wrote {out / 'training_speed.json'}" + (f", {out / 'training_speed.png'}" if made_png else ""))


if __name__ == "__main__":
    main()
