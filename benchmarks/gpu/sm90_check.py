"""The Hopper chunk kernel (v6) against float64 and against the generic kernel (v3), in one process.

1. Correctness by part, so that a wrong operand layout shows where it is: one chunk without
   a state (scores, mask, scores x V), one chunk from a state (Q R), the final state after
   one and two chunks (the K^T (w V) update), then longer and ragged calls.
2. Time of fwd and fwd+bwd (H 16, D 128, bf16, decay, 65,536 tokens per call) with
   LIGHTNING_ATTN_SM90=1 (v6 where it applies) and =0 (v3), side by side.
Writes sm90_check.json under --out; exits 1 if a correctness row fails.
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, "tests")
from reference import lightning_attn_ref, rel_err  # noqa: E402

import lightning_attn as la  # noqa: E402


def inputs(B, T, H, D, dtype, state, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = (torch.randn(B, T, H, D, device="cuda", generator=g) * D ** -0.5).to(dtype)
    k = (torch.randn(B, T, H, D, device="cuda", generator=g) * 0.5).to(dtype)
    v = torch.randn(B, T, H, D, device="cuda", generator=g).to(dtype)
    slope = torch.rand(H, device="cuda", generator=g) * 0.2 + 0.001
    h0 = torch.randn(B, H, D, D, device="cuda", generator=g) * 0.3 if state else None
    return q, k, v, slope, h0


def check(rows, name, B, T, H, dtype, state, grad=False, tol=1e-2):
    q, k, v, slope, h0 = inputs(B, T, H, 128, dtype, state)
    if grad:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True)
    ql, kl, vl = (x.detach().double().requires_grad_(grad) for x in (q, k, v))
    ro, rh = lightning_attn_ref(ql, kl, vl, slope, 1.0, h0.double() if h0 is not None else None)
    errs = {"o": rel_err(o, ro), "final": rel_err(hT, rh)}
    if grad:
        do = torch.randn_like(o)
        g = torch.autograd.grad((o * do).sum(), (q, k, v))
        rg = torch.autograd.grad((ro * do.double()).sum(), (ql, kl, vl))
        errs.update({n: rel_err(a, b) for n, a, b in zip(("dq", "dk", "dv"), g, rg)})
    record(rows, name, errs, tol, o, B=B, T=T, H=H, dtype=str(dtype)[6:], state=state)


def record(rows, name, errs, tol, o, **meta):
    """One correctness row: every error under tol and no NaN in the output."""
    ok = all(e < tol for e in errs.values()) and not torch.isnan(o).any().item()
    rows.append({"case": name, **meta, "errors": errs, "ok": ok})
    print(f"{'ok  ' if ok else 'FAIL'} {name:34} " + " ".join(f"{n} {e:.2e}" for n, e in errs.items()), flush=True)


def check_varlen(rows, dtype, tol):
    """Packed sequences (cu_seqlens): lengths 0, 1, 63, 64, 65, 300, 1, with and without the split."""
    lens = [0, 1, 63, 64, 65, 300, 1]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device="cuda", dtype=torch.int32)
    for H in (2, 40):  # N x H = 14 (split) and 280 (plain grid)
        q, k, v, slope, _ = inputs(1, int(cu[-1]), H, 128, dtype, False)
        h0 = torch.randn(len(lens), H, 128, 128, device="cuda") * 0.3
        o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=True, cu_seqlens=cu)
        ro, rh = lightning_attn_ref(q, k, v, slope, 1.0, h0, cu_seqlens=cu)
        record(rows, f"varlen H={H}", {"o": rel_err(o, ro), "final": rel_err(hT, rh)}, tol, o, H=H,
               dtype=str(dtype)[6:])


def timing(rows):
    import triton.testing as tt
    H, D, total = 16, 128, 65536
    for T in (1024, 4096, 16384, 65536):
        B = total // T
        q, k, v, slope, _ = inputs(B, T, H, D, torch.bfloat16, False)
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
        do = torch.randn_like(v)
        res = {"T": T, "B": B}
        for flag in ("1", "0"):
            os.environ["LIGHTNING_ATTN_SM90"] = flag
            fwd = lambda: la.lightning_attn_func(q, k, v, slope)  # noqa: E731

            def fb():
                o = la.lightning_attn_func(qg, kg, vg, slope)[0]
                torch.autograd.grad(o, (qg, kg, vg), do)
            fwd()
            torch.cuda.synchronize()
            res[f"fwd_sm90={flag}"] = tt.do_bench(fwd, warmup=25, rep=100)
            res[f"fwdbwd_sm90={flag}"] = tt.do_bench(fb, warmup=25, rep=100)
        os.environ["LIGHTNING_ATTN_SM90"] = "1"
        rows.append(res)
        print(f"T {T:6} B {B:3}  fwd v6 {res['fwd_sm90=1']:.3f} ms  v3 {res['fwd_sm90=0']:.3f} ms   "
              f"fwd+bwd v6 {res['fwdbwd_sm90=1']:.3f}  v3 {res['fwdbwd_sm90=0']:.3f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/out")
    ap.add_argument("--no-timing", action="store_true")
    a = ap.parse_args()
    os.environ["LIGHTNING_ATTN_SM90"] = "1"
    rows = []
    for dtype in (torch.bfloat16, torch.float16):
        tol = 1e-2 if dtype == torch.bfloat16 else 4e-3
        check(rows, "one chunk, no state", 1, 64, 2, dtype, False, tol=tol)
        check(rows, "one chunk, from a state", 1, 64, 2, dtype, True, tol=tol)
        check(rows, "two chunks, no state", 1, 128, 2, dtype, False, tol=tol)
        check(rows, "T=33 (one partial chunk)", 1, 33, 3, dtype, True, tol=tol)
        for T in (1, 200, 1000):
            check(rows, f"T={T}, state", 2, T, 3, dtype, True, tol=tol)
        check(rows, "T=4096 B=2 H=4 grad", 2, 4096, 4, dtype, True, grad=True, tol=tol)
        check(rows, "T=65536 B=1 H=2 (split)", 1, 65536, 2, dtype, True, tol=tol)
        check_varlen(rows, dtype, tol)
    timings = []
    if not a.no_timing:
        timing(timings)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "sm90_check.json"), "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "correctness": rows, "timing_ms": timings}, f, indent=1)
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
