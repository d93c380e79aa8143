"""Perplexity of trained checkpoints (examples/train_tnl.py's --out folders) on WikiText-103 valid AND test.

For each run folder: rebuild the model from checkpoint/trainer_state.json (TNL or the Transformer
baseline), load checkpoint/model.safetensors, and evaluate the mean next-token cross-entropy
over non-overlapping blocks of the training context (as train_tnl.py's evaluate does, but over
the whole split). Perplexity is per GPT-2 BPE token; an approximate word-level perplexity (the
paper's unit) rescales the total loss by the split's word count (whitespace-separated tokens
plus one end-of-line per line, as fairseq counts WikiText-103) -- an approximation: the
blocks' tail (< one block) is left out and the BPE context differs from a word-level model's.

    python benchmarks/eval_ppl.py --runs runs/q/tnl runs/q/transformer --out runs/q
Writes quality.json and prints a table in the paper's form.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightning_attn.baseline import Transformer, TransformerConfig  # noqa: E402
from lightning_attn.data import data_dir, eval_blocks, load_tokens  # noqa: E402
from lightning_attn.model import TNLConfig, TransNormerLLM  # noqa: E402

SPLITS = {"valid": "wikitext-103/wiki.valid.tokens", "test": "wikitext-103/wiki.test.tokens"}


def word_count(path: Path) -> int:
    """WikiText-103 words as fairseq counts them: whitespace tokens plus one <eos> per line."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            n += len(line.split()) + 1
    return n


def load_run(run: Path, device: str):
    state = json.loads((run / "checkpoint" / "trainer_state.json").read_text())
    mc = state["model_config"]
    if state["arch"] == "tnl":
        model = TransNormerLLM(TNLConfig(**mc))
    else:
        model = Transformer(TransformerConfig(**mc))
    from safetensors.torch import load_model
    model.to(device)
    load_model(model, str(run / "checkpoint" / "model.safetensors"), device=str(device))
    return model.eval(), state


@torch.no_grad()
def evaluate(model, tokens, seq_len, batch_size, device, bf16, max_tokens=None):
    total, count = 0.0, 0
    for x, y in eval_blocks(tokens, seq_len, batch_size, max_tokens):
        x, y = x.to(device), y.to(device)
        with torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            loss = model(x, labels=y, return_logits=False).loss
        total += loss.item() * y.numel()
        count += y.numel()
    return total, count


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="train_tnl.py --out folders (with checkpoint/)")
    p.add_argument("--out", default=None, help="folder for quality.json (default: the first run's parent)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-tokens", type=int, default=None, help="evaluate only the first n tokens of each split")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto")
    args = p.parse_args(argv)
    bf16 = args.dtype == "bf16" or (args.dtype == "auto" and args.device.startswith("cuda"))
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
    root = data_dir()
    tokens = {s: load_tokens(f) for s, f in SPLITS.items()}
    words = {s: word_count(root / f) for s, f in SPLITS.items()}
    rows = []
    for run in map(Path, args.runs):
        t0 = time.time()
        model, state = load_run(run, args.device)
        summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
        seq_len = state["model_config"]["max_seq_len"]
        row = {"run": str(run), "arch": state["arch"], "params": model.num_params(), "steps": state["step"],
               "tokens_seen": state["tokens_seen"], "train_seconds": state.get("train_seconds"),
               "seq_len": seq_len, "train_files": state["data"]["files"],
               "final_train_loss": summary.get("final_train_loss"),
               "best_val_ppl_during_training": summary.get("best_val_ppl"),
               "val_tokens_during_training": summary.get("eval_tokens")}
        for split in SPLITS:
            total, count = evaluate(model, tokens[split], seq_len, args.batch_size, args.device, bf16, args.max_tokens)
            mean = total / max(count, 1)
            row[f"{split}_loss"] = mean
            row[f"{split}_ppl"] = math.exp(mean)
            row[f"{split}_tokens_evaluated"] = count
            if args.max_tokens is None:
                # total nats of the evaluated tokens, scaled to the whole split, per word
                row[f"{split}_word_ppl_approx"] = math.exp(mean * len(tokens[split]) / words[split])
        row["eval_seconds"] = round(time.time() - t0, 1)
        rows.append(row)
        print(f"{run}: {row['arch']} {row['params'] / 1e6:.1f}M, {row['tokens_seen']:,} train tokens, "
              f"valid ppl {row['valid_ppl']:.2f}, test ppl {row['test_ppl']:.2f} ({row['eval_seconds']} s)", flush=True)
        del model
    out = Path(args.out) if args.out else Path(args.runs[0]).parent
    out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": "quality", "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "torch": torch.__version__, "rows": rows, "words": words, "bpe_tokens": {s: len(t) for s, t in tokens.items()},
           "command": " ".join(["python", "benchmarks/eval_ppl.py"] + (argv if argv is not None else sys.argv[1:])),
           "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    (out / "quality.json").write_text(json.dumps(doc, indent=1))
    print()
    print(table(rows))
    print(f"wrote {out / 'quality.json'}")


def table(rows):
    word = all("valid_word_ppl_approx" in r for r in rows)
    head = "| model | params | train tokens | val ppl (BPE) | test ppl (BPE) |" + (" val ppl (word, approx.) | test ppl (word, approx.) |" if word else "")
    lines = [head, "|" + "---|" * (5 + (2 if word else 0))]
    name = {"tnl": "TNL", "transformer": "Transformer (LLaMA-style)"}
    for r in rows:
        line = (f"| {name.get(r['arch'], r['arch'])} | {r['params'] / 1e6:.1f}M | {r['tokens_seen']:,} | "
                f"{r['valid_ppl']:.2f} | {r['test_ppl']:.2f} |")
        if word:
            line += f" {r['valid_word_ppl_approx']:.2f} | {r['test_word_ppl_approx']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
