"""Which call crashes: bad and good inputs on CPU and CUDA, one per subprocess."""
import shutil, subprocess, sys
CASES = {
 "cpu_good": "la.lightning_attn_func(torch.randn(2,10,3,8), torch.randn(2,10,3,8), torch.randn(2,10,3,4))",
 "cpu_bad_rank": "la.lightning_attn_func(torch.randn(10,3,8), torch.randn(2,10,3,8), torch.randn(2,10,3,4))",
 "cpu_bad_k": "la.lightning_attn_func(torch.randn(2,10,3,8), torch.randn(2,11,3,8), torch.randn(2,10,3,4))",
 "cpu_decode_bad": "la.lightning_attn_decode(torch.randn(2,3,8), torch.randn(2,3,8), torch.randn(2,3,4), torch.zeros(2,3,8,8))",
 "cpu_bad_dtype": "la.lightning_attn_func(torch.ones(2,10,3,8,dtype=torch.int64), torch.randn(2,10,3,8), torch.randn(2,10,3,4))",
 "cpu_srms_bad": "la.srms_norm(torch.ones(4, 8, dtype=torch.int64))",
 "cuda_good": "la.lightning_attn_func(*(torch.randn(2,10,3,d, device='cuda') for d in (8,8,4)))",
 "cpu_Dk_257": "la.lightning_attn_func(torch.randn(1,2,1,257), torch.randn(1,2,1,257), torch.randn(1,2,1,4))",
 "cpu_k_meta": "la.lightning_attn_func(torch.randn(2,10,3,8), torch.randn(2,10,3,8, device='meta'), torch.randn(2,10,3,4))",
 "cuda_f64": "la.lightning_attn_func(*(torch.randn(2,10,3,d, device='cuda', dtype=torch.float64) for d in (8,8,4)))",
 "cuda_bad_k": "la.lightning_attn_func(torch.randn(2,10,3,8,device='cuda'), torch.randn(2,11,3,8,device='cuda'), torch.randn(2,10,3,4,device='cuda'))",
}
for name, code in CASES.items():
    src = f"import torch, lightning_attn as la\ntry:\n    {code}\n    print('ok')\nexcept Exception as e:\n    print(type(e).__name__, str(e)[:150])"
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True)
    print(f"{name:16s} rc={r.returncode} {r.stdout.strip()[:200]} {r.stderr.strip()[-300:] if r.returncode else ''}")
    if r.returncode < 0 and shutil.which("gdb"):
        g = subprocess.run(["gdb", "-batch", "-ex", "run", "-ex", "bt 25", "--args", sys.executable, "-c", src],
                           capture_output=True, text=True)
        print("\n".join(l[:220] for l in g.stdout.splitlines() if l.startswith("#"))[:5000])

# The test file that crashed in the full suite: its pieces alone, then whole under gdb.
PYTEST = [sys.executable, "-X", "faulthandler", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_bad_input.py"]
for sel in ("k_device", "Dk_257", "not k_device"):
    r = subprocess.run(PYTEST + ["-k", sel, "-rf"], capture_output=True, text=True)
    tail = [l for l in r.stdout.splitlines() if l.startswith(("FAILED", "E ")) or "passed" in l or "failed" in l]
    print(f"pytest -k {sel!r}: rc={r.returncode}", "\n  ".join(x[:300] for x in tail[-12:]), r.stderr[-500:] if r.returncode < 0 else "")
if shutil.which("gdb"):
    g = subprocess.run(["gdb", "-batch", "-ex", "run", "-ex", "bt 30"] + ["--args"] + PYTEST + ["-x"], capture_output=True, text=True)
    print("gdb:", "\n".join(l[:250] for l in g.stdout.splitlines() if l.startswith("#") or "SIG" in l)[:6000])
else:
    print("no gdb on this machine")
