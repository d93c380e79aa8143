"""Sample from a checkpoint written by examples/train_tnl.py.

    python examples/generate.py --ckpt runs/tnl/checkpoint --prompt "The history of" --prompt "In 1998 ," \
        --max-new-tokens 60 --temperature 0.8 --top-k 50

Prompts of different lengths run as one batch (packed prefill, then batched decode steps with
the recurrent cache). ``--arch transformer`` checkpoints use the baseline's KV-cache generate.
"""
import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightning_attn.baseline import Transformer, TransformerConfig  # noqa: E402
from lightning_attn.data import EOT_TOKEN, get_tokenizer  # noqa: E402
from lightning_attn.model import TNLConfig, TransNormerLLM  # noqa: E402


def load_model(ckpt: str, device: str = "cpu"):
    """The model of a train_tnl.py checkpoint folder (model.safetensors + trainer_state.json)."""
    from safetensors.torch import load_model as load_weights

    state = json.loads((Path(ckpt) / "trainer_state.json").read_text())
    if state["arch"] == "tnl":
        model = TransNormerLLM(TNLConfig(**state["model_config"]))
    else:
        model = Transformer(TransformerConfig(**state["model_config"]))
    model.to(device)
    load_weights(model, str(Path(ckpt) / "model.safetensors"), device=device)
    return model.eval(), state


def main(argv=None):
    p = argparse.ArgumentParser(description="Sample from a TNL (or baseline) checkpoint.")
    p.add_argument("--ckpt", default="runs/tnl/checkpoint")
    p.add_argument("--prompt", action="append", help="may be given several times (default: two prompts)")
    p.add_argument("--max-new-tokens", type=int, default=60)
    p.add_argument("--temperature", type=float, default=0.8, help="0: greedy")
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)

    model, state = load_model(args.ckpt, args.device)
    enc = get_tokenizer()
    prompts = [t.replace("\\n", "\n") for t in (args.prompt or [" = Robert Boulter = \n", " The city of"])]
    ids = [enc.encode_ordinary(t) for t in prompts]
    gen = torch.Generator(device=args.device).manual_seed(args.seed)
    opts = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, generator=gen)
    t0 = time.time()
    if isinstance(model, TransNormerLLM):
        outs = model.generate(ids, args.max_new_tokens, stop_tokens=[EOT_TOKEN], **opts)
    else:  # the baseline's KV cache wants equal lengths: one prompt at a time
        outs = [model.generate(torch.tensor([i], device=args.device), args.max_new_tokens, **opts)[0].tolist()
                for i in ids]
    dt = time.time() - t0
    print(f"{state['arch']} checkpoint at step {state['step']} ({model.num_params() / 1e6:.1f}M params)")
    for text, out in zip(prompts, outs):
        print("-" * 80)
        print(text + enc.decode(out))
    n = sum(len(o) for o in outs)
    print("-" * 80)
    print(f"{n} tokens in {dt:.2f} s ({n / dt:.1f} tokens/s, batch of {len(prompts)})")


if __name__ == "__main__":
    main()
