"""Times forward and forward+backward of the kernel table's shapes (H 16, bf16, decay, 65,536 tokens
per call, and B = 1 at 1M; do_bench medians) with whichever lightning_attn is first on PYTHONPATH, and appends one
JSON line to --out. For A/B runs of two builds in one session: run it alternately under each
(A, B, A, B) and compare the medians per shape (benchmarks/gpu/run_ab.sh)."""
import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch
import triton.testing as tt

import lightning_attn as la

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench_kernels import H, make  # noqa: E402  (the kernel table's inputs)

ap = argparse.ArgumentParser()
ap.add_argument("--tag", required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()

TOTAL = 65536
# (B, T, Dk, Dv): 65,536 tokens per call, and one sequence of 1M tokens
SHAPES = [(TOTAL // T, T, Dk, Dv) for T, Dk, Dv in
          [(1024, 128, 128), (4096, 128, 128), (8192, 128, 128), (16384, 128, 128), (32768, 128, 128),
           (65536, 128, 128), (4096, 64, 64), (65536, 64, 64), (4096, 256, 128), (65536, 256, 128)]] + [
          (1, 1 << 20, 128, 128)]
# rows timed under hopper=False too: the portable kernels on the same inputs
PORTABLE = {(16, 4096, 128, 128), (1, 65536, 128, 128), (16, 4096, 64, 64)}
row = {"tag": a.tag, "module": la.__file__, "time": time.time(), "ms": {}}
for B, T, Dk, Dv, portable in [s + (False,) for s in SHAPES] + [s + (True,) for s in SHAPES if s in PORTABLE]:
    torch.manual_seed(0)
    q, k, v = make(B, T, Dk, Dv)
    slope = torch.rand(H, device="cuda") * 0.2 + 0.001
    qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
    do = torch.randn_like(v)
    key = f"T{T}_Dk{Dk}_Dv{Dv}" + (f"_B{B}" if B * T != TOTAL else "") + ("_portable" if portable else "")

    opts = (lambda: la.kernel_options(hopper=False)) if portable else contextlib.nullcontext

    def fwd():
        with opts():
            return la.lightning_attn_func(q, k, v, slope)[0]

    def fb():
        with opts():
            o = la.lightning_attn_func(qg, kg, vg, slope)[0]
            return torch.autograd.grad(o, (qg, kg, vg), do)

    o = fwd()
    grads = fb()
    assert torch.isfinite(o).all() and o.abs().sum() > 0, key  # never time on zeros or NaN
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads), key
    row["ms"][key] = {"fwd": tt.do_bench(fwd, warmup=25, rep=100, return_mode="median"),
                      "fwdbwd": tt.do_bench(fb, warmup=25, rep=100, return_mode="median")}
    print(a.tag, key, " ".join(f"{m} {t:.3f}" for m, t in row["ms"][key].items()), flush=True)
with open(a.out, "a") as f:
    f.write(json.dumps(row) + "\n")
