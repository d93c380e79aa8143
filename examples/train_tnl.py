"""Train TransNormerLLM (or the same-size Transformer baseline) on the bundled WikiText-103 text.

The README's main job (2 CPU cores, ~3 minutes, prints the validation perplexity):

    python examples/train_tnl.py

The ~45M WikiText-103 setting on a GPU (bf16 autocast, torch.compile), TNL then the baseline:

    python examples/train_tnl.py --preset wikitext-45M --batch-size 16 --lr 1e-3 --warmup 80 \
        --max-steps 800 --dropout 0.1 --eval-every 50 --eval-tokens 0 --max-minutes 6 --out runs/h200/tnl-45m
    python examples/train_tnl.py --arch transformer --preset wikitext-45M --batch-size 16 --lr 1e-3 --warmup 80 \
        --max-steps 800 --dropout 0.1 --eval-every 50 --eval-tokens 0 --max-minutes 6 --out runs/h200/transformer-45m

(800 steps of 16 x 512 tokens = 13 passes over the 635K-token bundled train head: the run also
shows where it starts to overfit; the summary keeps the best validation perplexity.)

Everything a run needs is in functions (build_model, build_optimizer, lr_at, load_data, evaluate,
save_checkpoint, load_checkpoint, train) so a distributed launcher can reuse them. Checkpoints
(safetensors: model, optimizer; JSON: step, data position, history) resume a run exactly: the
data stream is a pure function of the step (lightning_attn.data.TokenBlocks).

Perplexity here is per GPT-2 BPE token (not per word).
"""
import argparse
import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from lightning_attn.baseline import Transformer, TransformerConfig  # noqa: E402
from lightning_attn.data import GPT2_VOCAB, TokenBlocks, eval_blocks, load_tokens  # noqa: E402
from lightning_attn.model import PRESETS, TNLConfig, TransNormerLLM  # noqa: E402

DEFAULT_TRAIN = "wikitext-103/wiki.train.head.tokens"
DEFAULT_VALID = "wikitext-103/wiki.valid.tokens"


# ----------------------------------------------------------------------------- arguments


def get_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=["tnl", "transformer"], default="tnl", help="TNL or the same-size LLaMA-style baseline")
    g.add_argument("--preset", choices=sorted(PRESETS), default="cpu-tiny")
    g.add_argument("--d-model", type=int), g.add_argument("--n-layers", type=int)
    g.add_argument("--n-heads", type=int), g.add_argument("--glu-dim", type=int)
    g.add_argument("--slope-kind", choices=["released", "paper"])
    g.add_argument("--gradient-checkpointing", action="store_true")
    g.add_argument("--dropout", type=float, default=0.0, help="embedding and residual dropout (small data)")
    g = p.add_argument_group("data")
    g.add_argument("--data", nargs="+", default=[DEFAULT_TRAIN], help="training text files (default: bundled WikiText-103 head)")
    g.add_argument("--valid", default=DEFAULT_VALID, help="validation text (never trained on)")
    g.add_argument("--seq-len", type=int, help="context length (default: the preset's max_seq_len)")
    g.add_argument("--batch-size", type=int, default=4, help="sequences per micro-batch (per rank)")
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--data-seed", type=int, default=0)
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float, default=5e-3)
    g.add_argument("--min-lr", type=float, default=None, help="cosine floor (default lr/10)")
    g.add_argument("--warmup", type=int, default=20, help="linear warmup steps")
    g.add_argument("--max-steps", type=int, default=2000, help="cosine schedule length (shortened to fit --max-minutes)")
    g.add_argument("--max-minutes", type=float, default=3.0, help="wall-time budget incl. validation (0: none)")
    g.add_argument("--weight-decay", type=float, default=0.1)
    g.add_argument("--beta1", type=float, default=0.9), g.add_argument("--beta2", type=float, default=0.95)
    g.add_argument("--grad-clip", type=float, default=1.0)
    g.add_argument("--seed", type=int, default=1234)
    g = p.add_argument_group("evaluation and output")
    g.add_argument("--eval-every", type=int, default=50, help="validate every n steps (0: only at the end)")
    g.add_argument("--eval-tokens", type=int, default=8192, help="validation tokens used (0: all of wiki.valid)")
    g.add_argument("--eval-batch-size", type=int, default=16)
    g.add_argument("--out", default="runs/tnl", help="output folder: checkpoint, summary.json, loss_curve.png")
    g.add_argument("--save-every", type=int, default=0, help="checkpoint every n steps (0: only at the end)")
    g.add_argument("--resume", default=None, help="checkpoint folder to resume from ('auto': OUT/checkpoint if present)")
    g.add_argument("--no-save", action="store_true", help="write no checkpoint")
    g.add_argument("--stop-at-step", type=int, default=None, help=argparse.SUPPRESS)  # simulate an interruption (tests)
    g = p.add_argument_group("system")
    g.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    g.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="autocast dtype (auto: bf16 on GPU)")
    g.add_argument("--compile", dest="compile", action="store_true", default=None, help="torch.compile (default on GPU)")
    g.add_argument("--no-compile", dest="compile", action="store_false")
    g.add_argument("--threads", type=int, default=None, help="CPU threads")
    g.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    g = p.add_argument_group("distributed (under torchrun; see docs/distributed.md)")
    g.add_argument("--dp", choices=["none", "ddp", "fsdp"], default="none",
                   help="data-parallel wrapper over all dp x sp ranks: DDP or FSDP2 fully_shard (none: one process)")
    g.add_argument("--sp", type=int, default=1, help="sequence-parallel group size (dp = world size // sp)")
    args = p.parse_args(argv)
    if args.compile is None:
        args.compile = args.device.startswith("cuda")
    if not args.max_minutes:
        args.max_minutes = None
    if args.min_lr is None:
        args.min_lr = args.lr / 10
    return args


# ----------------------------------------------------------------------------- pieces


def model_config(args) -> TNLConfig:
    """The TNL config of the preset with the command-line overrides."""
    over = {k: v for k, v in dict(d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                                   glu_dim=args.glu_dim, slope_kind=args.slope_kind,
                                   max_seq_len=args.seq_len).items() if v is not None}
    return TNLConfig.from_preset(args.preset, gradient_checkpointing=args.gradient_checkpointing,
                                 dropout=args.dropout, **over)


def build_model(args, device="cpu") -> nn.Module:
    """TransNormerLLM, or with ``--arch transformer`` the baseline of the same size, on ``device``."""
    cfg = model_config(args)
    torch.manual_seed(args.seed)
    model = TransNormerLLM(cfg) if args.arch == "tnl" else Transformer(TransformerConfig.matching(cfg))
    return model.to(device)


def build_optimizer(model: nn.Module, args) -> torch.optim.Optimizer:
    """AdamW with decoupled weight decay on matrices only (the model's param_groups)."""
    fused = {"fused": True} if next(model.parameters()).is_cuda else {}
    return torch.optim.AdamW(model.param_groups(args.weight_decay), lr=args.lr,
                             betas=(args.beta1, args.beta2), **fused)


def lr_at(step: int, args) -> float:
    """Linear warmup to lr over ``warmup`` steps, then cosine to min_lr at ``max_steps``."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.max_steps - args.warmup))
    return args.min_lr + 0.5 * (args.lr - args.min_lr) * (1 + math.cos(math.pi * progress))


def load_data(args, rank: int = 0, world_size: int = 1) -> Tuple[TokenBlocks, "np.ndarray"]:  # noqa: F821
    """Training blocks (from --data) and validation tokens (from --valid), GPT-2 BPE."""
    seq_len = model_config(args).max_seq_len
    train = TokenBlocks(load_tokens(args.data), seq_len, args.batch_size, seed=args.data_seed,
                        rank=rank, world_size=world_size)
    return train, load_tokens(args.valid)


def autocast_ctx(args):
    use_bf16 = args.dtype == "bf16" or (args.dtype == "auto" and args.device.startswith("cuda"))
    if not use_bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=args.device.split(":")[0], dtype=torch.bfloat16)


@torch.no_grad()
def evaluate(model: nn.Module, tokens, args, max_tokens: Optional[int] = None, par=None) -> Tuple[float, float]:
    """Mean token cross-entropy and perplexity over validation blocks (the first max_tokens).

    par: a ``ParallelContext``; every rank then runs the same blocks, split over its sp group."""
    seq_len = model_config(args).max_seq_len
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in eval_blocks(tokens, seq_len, args.eval_batch_size, max_tokens or None):
        x, y = x.to(args.device), y.to(args.device)
        with autocast_ctx(args):
            loss = par.forward_loss(model, x, y)[1] if par is not None else model(x, labels=y, return_logits=False).loss
        total += loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    mean = total / max(count, 1)
    return mean, math.exp(mean)


# ----------------------------------------------------------------------------- checkpoints


def save_checkpoint(folder, model: nn.Module, optimizer: torch.optim.Optimizer, state: Dict) -> None:
    """model.safetensors, optimizer.safetensors (+ param groups in its metadata), trainer_state.json."""
    from safetensors.torch import save_file, save_model

    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    save_model(model, str(tmp / "model.safetensors"))
    osd = optimizer.state_dict()
    tensors = {f"state.{pid}.{k}": v.detach().cpu().contiguous() for pid, st in osd["state"].items()
               for k, v in st.items() if torch.is_tensor(v)}
    tensors["rng.cpu"] = torch.get_rng_state()  # dropout masks continue exactly after a resume
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    save_file(tensors, str(tmp / "optimizer.safetensors"), metadata={"param_groups": json.dumps(osd["param_groups"])})
    (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
    if folder.exists():  # replace atomically-ish: never leave a half-written checkpoint behind
        old = folder.with_name(folder.name + ".old")
        folder.rename(old)
        tmp.rename(folder)
        for f in old.iterdir():
            f.unlink()
        old.rmdir()
    else:
        tmp.rename(folder)


def load_checkpoint(folder, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None) -> Dict:
    """Load model (and optimizer) state in place; returns trainer_state.json's dict."""
    from safetensors import safe_open
    from safetensors.torch import load_model

    folder = Path(folder)
    device = next(model.parameters()).device
    load_model(model, str(folder / "model.safetensors"), device=str(device))
    if optimizer is not None:
        with safe_open(str(folder / "optimizer.safetensors"), framework="pt", device=str(device)) as f:
            groups = json.loads(f.metadata()["param_groups"])
            state: Dict[int, Dict] = {}
            for key in f.keys():
                if key.startswith("rng."):
                    rng = f.get_tensor(key).cpu()
                    torch.set_rng_state(rng) if key == "rng.cpu" else torch.cuda.set_rng_state(rng)
                    continue
                _, pid, name = key.split(".", 2)
                t = f.get_tensor(key)
                state.setdefault(int(pid), {})[name] = t.cpu() if name == "step" else t
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    return json.loads((folder / "trainer_state.json").read_text())


# ----------------------------------------------------------------------------- plots


def plot_losses(history: Dict, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = [s for s, _ in history["train"]]
    ax.plot(steps, [l for _, l in history["train"]], lw=0.8, alpha=0.8, label="train loss")
    if history["val"]:
        ax.plot([v["step"] for v in history["val"]], [v["loss"] for v in history["val"]], "o-", label="val loss")
    ax.set_xlabel("step"), ax.set_ylabel("cross-entropy (nats / GPT-2 token)")
    ax.set_title(history.get("title", "")), ax.grid(alpha=0.3), ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- training


def train(args) -> Dict:
    from lightning_attn.distributed import setup_parallel

    par = setup_parallel(args.dp, args.sp)  # one process, or torchrun's dp x sp ranks
    log = print if par.is_main else (lambda *a, **k: None)
    if par.world > 1:
        args.device = str(par.device)
        args.no_progress = args.no_progress or not par.is_main
        if args.dp == "fsdp" and (not args.no_save or args.resume):
            if args.resume:
                raise SystemExit("--dp fsdp: this example does not read sharded checkpoints yet (use --dp ddp to resume)")
            log("--dp fsdp: this example does not write sharded checkpoints yet; running with --no-save")
            args.no_save = True
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = args.device
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    train_blocks, val_tokens = load_data(args, rank=par.dp_rank, world_size=par.dp)
    model = build_model(args, device)
    if par.world > 1 and args.arch != "tnl":
        raise SystemExit("--dp / --sp under torchrun: only --arch tnl")
    train_model = par.wrap(model)  # DDP / FSDP2 over all ranks, attention wired to the sp group
    optimizer = build_optimizer(model, args)
    cfg = model.config
    title = f"{args.arch} {args.preset} ({model.num_params() / 1e6:.1f}M params)"
    history = {"train": [], "val": [], "title": title}
    step, tokens_seen, elapsed_before = 0, 0, 0.0

    resume = args.resume
    if resume == "auto":
        resume = str(out / "checkpoint") if (out / "checkpoint" / "trainer_state.json").exists() else None
    if resume:
        st = load_checkpoint(resume, model, optimizer)
        if st["arch"] != args.arch or st["model_config"] != cfg.to_dict():
            raise SystemExit(f"--resume {resume}: the checkpoint is a different model ({st['arch']}, {st['model_config']}).")
        step, tokens_seen, history = st["step"], st["tokens_seen"], st["history"]
        if st["args"].get("max_minutes") is not None:
            args.max_steps = st["args"]["max_steps"]  # the schedule the interrupted run had fitted
        elapsed_before = st.get("train_seconds", 0.0)
        if st["data"] != _data_state(args, train_blocks):
            raise SystemExit(f"--resume {resume}: the data settings differ from the checkpoint's {st['data']}.")
        log(f"resumed from {resume} at step {step}")

    fwd = torch.compile(train_model) if args.compile else train_model
    if par.world > 1:
        log(f"torchrun: {par.world} ranks = dp {par.dp} x sp {par.sp}, --dp {args.dp}; "
            f"{args.batch_size} sequences per dp rank, {model_config(args).max_seq_len // par.sp} tokens per sp rank")
    log(f"{title} on {device}; {train_blocks.num_blocks} train blocks of {cfg.max_seq_len}, "
          f"{args.batch_size * args.grad_accum} x {cfg.max_seq_len} tokens per step; "
          f"compile={args.compile} autocast={'bf16' if not isinstance(autocast_ctx(args), contextlib.nullcontext) else 'off'}")

    def state_dict() -> Dict:
        return {"step": step, "tokens_seen": tokens_seen, "arch": args.arch, "model_config": cfg.to_dict(),
                "data": _data_state(args, train_blocks), "history": history, "args": vars(args),
                "train_seconds": elapsed_before + train_time}

    def run_eval(final=False):
        loss, ppl = evaluate(fwd, val_tokens, args, args.eval_tokens, par if par.world > 1 else None)
        history["val"].append({"step": step, "loss": loss, "ppl": ppl})
        log(f"step {step}: val loss {loss:.4f}, val ppl {ppl:.2f}" + (" (final)" if final else ""))

    pbar = None
    if not args.no_progress:
        from tqdm import tqdm
        pbar = tqdm(total=args.max_steps, initial=step, dynamic_ncols=True, mininterval=1.0)
    model.train()
    t0, train_time, tokens_this_run = time.time(), 0.0, 0
    start_step, t_first, schedule_fixed = step, t0, bool(resume)
    stopped_by_time = False
    while step < args.max_steps:
        if args.stop_at_step is not None and step >= args.stop_at_step:
            break
        if par.agree(args.max_minutes is not None and (time.time() - t0) / 60 >= args.max_minutes):
            stopped_by_time = True
            break
        lr = lr_at(step, args)
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss_sum = 0.0
        for micro in range(args.grad_accum):
            x, y = train_blocks.batch(step * args.grad_accum + micro)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with autocast_ctx(args):
                loss, loss_value = par.forward_loss(fwd, x, y)  # global mean over dp x sp
            (loss / args.grad_accum).backward()
            loss_sum += loss_value.item() / args.grad_accum
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        n_tok = args.grad_accum * train_blocks.tokens_per_step()
        tokens_seen += n_tok
        tokens_this_run += n_tok
        history["train"].append([step, loss_sum])
        train_time = time.time() - t0
        if step - start_step == 1:
            t_first = time.time()  # time from here on: no compile / warm-up in the estimate
        if args.max_minutes is not None and not schedule_fixed and step - start_step == 6:
            schedule_fixed = True  # fit the cosine into the time budget (saved in the checkpoint)
            per_step = (time.time() - t_first) / 5
            eval_cost = per_step * (args.eval_tokens or 250_000) / (args.grad_accum * train_blocks.tokens_per_step()) / 3
            budget = args.max_minutes * 60 * 0.95 - (time.time() - t0) - eval_cost  # the final eval too
            fit = step + int(budget / (per_step + (eval_cost / args.eval_every if args.eval_every else 0)))
            fit = par.from_main(fit)  # every rank must run the same number of steps
            if fit < args.max_steps:
                log(f"\n--max-minutes {args.max_minutes}: {per_step:.2f} s/step, schedule shortened to {fit} steps")
                args.max_steps = max(fit, step + 1)
                args.warmup = min(args.warmup, max(1, args.max_steps // 10))
                if pbar is not None:
                    pbar.total = args.max_steps
        if pbar is not None:
            pbar.update(1)
            pbar.set_postfix(loss=f"{loss_sum:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_this_run / max(train_time, 1e-9):.0f}")
        if args.eval_every and step % args.eval_every == 0 and step < args.max_steps:
            run_eval()
        if args.save_every and step % args.save_every == 0 and not args.no_save and par.is_main:
            save_checkpoint(out / "checkpoint", model, optimizer, state_dict())
    if pbar is not None:
        pbar.close()
    train_time = time.time() - t0
    if stopped_by_time:
        log(f"stopped by --max-minutes {args.max_minutes} at step {step}")
    if args.stop_at_step is None:
        run_eval(final=True)
    if not args.no_save and par.is_main:
        save_checkpoint(out / "checkpoint", model, optimizer, state_dict())
    summary = {
        "arch": args.arch, "preset": args.preset, "params": model.num_params(), "model_config": cfg.to_dict(),
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__, "steps": step, "tokens_seen": tokens_seen,
        "train_seconds_this_run": train_time, "tokens_per_second": tokens_this_run / max(train_time, 1e-9),
        "final_train_loss": history["train"][-1][1] if history["train"] else None,
        "val": history["val"], "final_val_ppl": history["val"][-1]["ppl"] if history["val"] else None,
        "best_val_ppl": min(v["ppl"] for v in history["val"]) if history["val"] else None,
        "eval_tokens": args.eval_tokens or "all", "train_losses": history["train"], "args": vars(args),
        "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:]),
    }
    if par.world > 1:
        summary.update(world_size=par.world, dp=par.dp, sp=par.sp, data_parallel=args.dp)
    if par.is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    if history["train"] and par.is_main:
        plot_losses(history, out / "loss_curve.png")
    par.close()
    if summary["final_val_ppl"] is not None:
        log(f"final validation perplexity: {summary['final_val_ppl']:.2f} (loss {history['val'][-1]['loss']:.4f}, "
              f"{args.eval_tokens or 'all'} tokens of {Path(args.valid).name}); {step} steps, "
              f"{tokens_this_run / max(train_time, 1e-9):.0f} tokens/s, {train_time / 60:.1f} min; wrote {out}/")
        best = min(history["val"], key=lambda v: v["ppl"])
        if best is not history["val"][-1]:
            print(f"best validation perplexity: {best['ppl']:.2f} at step {best['step']}")
    return summary


def _data_state(args, blocks: TokenBlocks) -> Dict:
    """What defines the data stream (the position is the step)."""
    return {"files": list(args.data), "seq_len": blocks.seq_len, "batch_size": blocks.batch_size,
            "grad_accum": args.grad_accum, "seed": blocks.seed, "num_blocks": blocks.num_blocks}


def main(argv=None):
    train(get_args(argv))


if __name__ == "__main__":
    main()
