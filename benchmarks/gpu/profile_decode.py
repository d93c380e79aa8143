"""Where a decode step's time goes: torch.profiler over a few eager and static-cache steps of
the Transformer baseline and TNL (385M), top ops by CUDA and CPU time. Diagnostic, GPU only:
    python benchmarks/gpu/profile_decode.py [--models transformer,tnl] [--steps 10]
"""
import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_generation as bg  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="transformer,tnl")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=1)
    a = ap.parse_args()
    args = bg.get_args(["--device", "cuda"])
    prompts = torch.randint(0, 50257, (a.batch, 512), device="cuda")
    for kind in a.models.split(","):
        model = bg.build(kind, args, "cuda")
        with torch.no_grad():
            cache = bg.new_cache(model, kind, a.batch, 512 + 2 * a.steps + 8)
            tok = model(prompts, cache=cache, num_logits_to_keep=1).logits[:, -1].argmax(-1)
            for _ in range(3):
                tok = model(tok[:, None], cache=cache).logits[:, -1].argmax(-1)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                for _ in range(a.steps):
                    tok = model(tok[:, None], cache=cache).logits[:, -1].argmax(-1)
                torch.cuda.synchronize()
        print(f"==== {kind} eager decode, B={a.batch}, {a.steps} steps")
        print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=60))
        print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=8, max_name_column_width=60))
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
