"""The Hopper chunk kernel (v6) against float64 and against the generic kernel (v3), in one process.

1. Correctness by part, so that a wrong operand layout shows where it is: one chunk without
   a state (scores, mask, scores x V), one chunk from a state (Q R), the final state after
   one and two chunks (the K^T (w V) update), then longer and ragged calls.
2. Time of fwd and fwd+bwd (H 16, D 128, bf16, decay, 65,536 tokens per call) of the
   VARIANTS below side by side, and the kernels of the split calls (torch.profiler).
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


def check(rows, name, B, T, H, dtype, state, grad=False, tol=1e-2, final=True, Dk=128, Dv=128):
    q, k, v, slope, h0 = inputs(B, T, H, max(Dk, Dv), dtype, state)
    q, k, v = q[..., :Dk].contiguous(), k[..., :Dk].contiguous(), v[..., :Dv].contiguous()
    h0 = h0[..., :Dk, :Dv].contiguous() if h0 is not None else None
    if grad:
        q, k, v = (x.requires_grad_() for x in (q, k, v))
    o, hT = la.lightning_attn_func(q, k, v, slope, 1.0, h0, output_final_state=final)
    ql, kl, vl = (x.detach().double().requires_grad_(grad) for x in (q, k, v))
    ro, rh = lightning_attn_ref(ql, kl, vl, slope, 1.0, h0.double() if h0 is not None else None)
    errs = {"o": rel_err(o, ro)}
    if final:
        errs["final"] = rel_err(hT, rh)
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


# Variants timed side by side: (name, kernel options; docs/kernels.md). v6 = the defaults: Hopper
# kernels (Dk = 256 in 128-wide pieces, the second k piece adding into o in the kernel); v3 = the
# portable mma.sync kernels (both named after the versions in benchmarks/HISTORY.md); nosplit = no
# sequence split (the plain grid even when it leaves SMs idle); acc0 = Dk = 256 pieces summed by
# a separate add; ws = split states in a workspace instead of the output's rows; f2, f8 = 2 or 8
# pass-1 sub-segments per segment instead of the plan's; notma = the full Hopper kernel with
# cp.async loads and a block barrier per chunk instead of TMA and mbarriers, and 4-byte row
# stores everywhere; rowstores = TMA loads but 4-byte row stores instead of stmatrix + TMA store
# (forward, dk/dv sweep and the forward ACC piece of Dk = 256);
# d64off = Dk = Dv = 64 on the portable kernels instead of the Hopper ones (forward and dk/dv).
VARIANTS = {
    "v6": {},
    "v3": {"hopper": False},
    "nosplit": {"split": False},
    "acc0": {"accumulate_in_kernel": False},
    "ws": {"states_in_output_rows": False},
    "f2": {"split_subsegments": 2},
    "f8": {"split_subsegments": 8},
    "f1": {"split_subsegments": 1},
    "f3": {"split_subsegments": 3},
    "f2ws": {"split_subsegments": 2, "states_in_output_rows": False},
    "notma": {"tma_loads": False},
    "rowstores": {"tma_stores": False},
    "d64off": {"hopper_d64": False},
}


def set_variant(name):
    """Kernel options of variant `name` (lightning_attn.KernelOptions fields), the rest default."""
    la.set_kernel_options(la.KernelOptions(**VARIANTS[name]))


def kernel_table(fn):
    """CUDA time per call of every kernel fn launches (torch.profiler, 5 calls)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
    out = {}
    for e in prof.key_averages():
        if e.device_time_total > 0:
            name = e.key.split("(")[0].replace("void lightning_attn::cuda::", "")
            name = name.replace("(anonymous namespace)::", "").replace("__nv_bfloat16", "bf16")
            out[name] = out.get(name, 0.0) + e.device_time_total / 5 / 1000
    return out


def timing(rows, only_split=None):
    """only_split: time just the split rows (T >= 16K, Dk = 128) with these variants."""
    import triton.testing as tt
    H, total = 16, 65536
    shapes = ((1024, 128), (4096, 128), (8192, 128), (16384, 128), (32768, 128), (65536, 128),
              (4096, 256), (65536, 256), (4096, 64), (65536, 64))
    if only_split:
        shapes = ((8192, 128), (16384, 128), (32768, 128), (65536, 128))
    for T, D in shapes:
        B = total // T
        q, k, v, slope, _ = inputs(B, T, H, D, torch.bfloat16, False)
        v = v[..., :128].contiguous()
        qg, kg, vg = (x.clone().requires_grad_() for x in (q, k, v))
        do = torch.randn_like(v)
        res = {"T": T, "B": B, "Dk": D, "Dv": v.shape[-1]}
        fwd = lambda: la.lightning_attn_func(q, k, v, slope)  # noqa: E731

        def fb():
            o = la.lightning_attn_func(qg, kg, vg, slope)[0]
            torch.autograd.grad(o, (qg, kg, vg), do)
        split = B * H < 132 and D == 128
        names = ["v6", "rowstores", "notma", "v3"] + (["nosplit"] if split else []) + (["acc0"] if D == 256 else [])
        if D == 64:  # v12: the Hopper kernel at Dk = Dv = 64 against the portable one
            names = ["v6", "d64off", "notma"]
        if only_split:
            names = ["v6"] + (only_split if split else [])
        for name in names:
            set_variant(name)
            fwd()
            fb()
            torch.cuda.synchronize()
            res[f"fwd_{name}"] = tt.do_bench(fwd, warmup=25, rep=100)
            res[f"fwdbwd_{name}"] = tt.do_bench(fb, warmup=25, rep=100)
            if (name == "v6" or only_split) and (B * H < 132 or D != 128):
                res[f"kernels_fwd_{name}"] = kernel_table(fwd)
                res[f"kernels_fwdbwd_{name}"] = kernel_table(fb)
        set_variant("v6")
        rows.append(res)
        print(f"T {T:6} B {B:3} Dk {D}  fwd " + " ".join(f"{n} {res['fwd_' + n]:.3f}" for n in names)
              + "   fwd+bwd " + " ".join(f"{n} {res['fwdbwd_' + n]:.3f}" for n in names), flush=True)
        for key in [k for k in res if k.startswith("kernels_")]:
            print(f"    {key}: " + ", ".join(f"{n} {t:.3f}" for n, t in res[key].items()), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/out")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--split-variants", nargs="*", help="only time the split rows with these variants")
    a = ap.parse_args()
    set_variant("v6")
    rows = []
    if a.split_variants:
        timing(rows, a.split_variants)
        os.makedirs(a.out, exist_ok=True)
        with open(os.path.join(a.out, "sm90_split_variants.json"), "w") as f:
            json.dump({"gpu": torch.cuda.get_device_name(), "timing_ms": rows}, f, indent=1)
        return
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
        check(rows, "T=65536 B=1 H=2 (split, no final)", 1, 65536, 2, dtype, True, tol=tol, final=False)
        check(rows, "T=16384 B=4 H=16 (split 2, no final)", 4, 16384, 16, dtype, True, tol=tol, final=False)
        check(rows, "T=4096 B=2 H=33 grad (states in rows)", 2, 4096, 33, dtype, True, grad=True, tol=tol)
        check_varlen(rows, dtype, tol)
    # Dk = 256 (and Dv = 256): 128-wide pieces
    for Dk, Dv in ((256, 128), (128, 256), (256, 256)):
        check(rows, f"Dk={Dk} Dv={Dv} T=1000 grad", 2, 1000, 3, torch.bfloat16, True, grad=True, Dk=Dk, Dv=Dv)
        check(rows, f"Dk={Dk} Dv={Dv} T=20000 (split)", 1, 20000, 2, torch.bfloat16, True, Dk=Dk, Dv=Dv)
    check(rows, "Dk=256 fp16 T=777 grad", 2, 777, 3, torch.float16, True, grad=True, tol=4e-3, Dk=256, Dv=128)
    # Dk = Dv = 64 (v12: one warpgroup per block)
    check(rows, "Dk=Dv=64 T=1000 grad", 2, 1000, 3, torch.bfloat16, True, grad=True, Dk=64, Dv=64)
    check(rows, "Dk=Dv=64 fp16 T=33", 1, 33, 3, torch.float16, True, tol=4e-3, Dk=64, Dv=64)
    check(rows, "Dk=Dv=64 T=20000 (split)", 1, 20000, 2, torch.bfloat16, True, Dk=64, Dv=64)
    set_variant("acc0")
    check(rows, "acc0 Dk=256 T=1000 grad", 2, 1000, 3, torch.bfloat16, True, grad=True, Dk=256, Dv=128)
    set_variant("v6")
    timings = []
    if not a.no_timing:
        timing(timings)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "sm90_check.json"), "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "correctness": rows, "timing_ms": timings}, f, indent=1)
    sys.exit(0 if all(r["ok"] for r in rows) else 1)


if __name__ == "__main__":
    main()
