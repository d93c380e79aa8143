"""Smoke test of an installed lightning_attn (run from outside the source tree, CPU): every
public function and class once, each against a plain PyTorch computation or an invariant."""
import os
import sys

import torch

import lightning_attn as la

assert not os.path.exists(os.path.join(os.getcwd(), "lightning_attn")), "run from outside the repository"
print("lightning_attn", la.__version__, "from", os.path.dirname(la.__file__))
torch.manual_seed(0)
B, T, H, D = 2, 37, 3, 16
q, k, v = (torch.randn(B, T, H, D) * 0.3 for _ in range(3))
slope = la.tnl_slopes(H, 0, 2)
assert slope.shape == (H,) and (slope >= 0).all()

# lightning_attn_func against the plain recurrence; then decode steps continue it
o, hT = la.lightning_attn_func(q, k, v, slope, 0.5, output_final_state=True)
lam = torch.exp(-slope.double())
S = torch.zeros(B, H, D, D, dtype=torch.float64)
ref = torch.empty(B, T, H, D, dtype=torch.float64)
for t in range(T):
    S = lam[None, :, None, None] * S + k[:, t, :, :, None].double() * v[:, t, :, None, :].double()
    ref[:, t] = 0.5 * torch.einsum("bhk,bhkv->bhv", q[:, t].double(), S)
assert torch.allclose(o.double(), ref, atol=1e-4), (o.double() - ref).abs().max()
assert torch.allclose(hT.double(), S, atol=1e-4)
x = torch.randn(B, H, D)
state = hT.clone()
od = la.lightning_attn_decode(x, x, x, state, slope, 0.5)
S2 = lam[None, :, None, None] * S + x[..., :, None].double() * x[..., None, :].double()
assert torch.allclose(od.double(), 0.5 * torch.einsum("bhk,bhkv->bhv", x.double(), S2), atol=1e-4)
# several tokens per call, from slots of a state pool: the same as the steps above
pool = torch.zeros(3, H, D, D)
pool[2] = hT[0]
o2, _ = la.lightning_attn_decode_tokens(x[:1, None], x[:1, None], x[:1, None], pool, slope, 0.5,
                                        slot_ids=torch.tensor([2], dtype=torch.int32))
assert torch.allclose(o2[:, 0], od[:1], atol=1e-5) and torch.allclose(pool[2], state[0], atol=1e-5)
# prefill with a state every 16 tokens
_, fin, ck = la.lightning_attn_prefill(q, k, v, 16, slope, 0.5)
assert ck.shape == (B, 3, H, D, D) and torch.allclose(fin, hT, atol=1e-4)
# gradients exist and are finite
qg = q.clone().requires_grad_()
la.lightning_attn_func(qg, k, v, slope)[0].sum().backward()
assert torch.isfinite(qg.grad).all()

# srms_norm and the modules
y = la.srms_norm(torch.randn(4, 8))
assert torch.allclose(y.pow(2).mean(-1), torch.ones(4), atol=1e-3)
xs = torch.randn(B, T, 32)
pos = torch.arange(T)
for m, args in ((la.SRMSNorm(), ()), (la.SGLU(32, 64), ()), (la.TNLBlock(32, 2, 64, 0, 2), (pos,))):
    out = m(xs, *args)
    assert out.shape == xs.shape and torch.isfinite(out).all(), type(m).__name__
attn = la.LightningAttention(32, 2, batch_first=True)
assert attn(xs, xs, xs, need_weights=False)[0].shape == xs.shape

# the model: a loss, generation with the recurrent cache, the chunked loss
cfg = la.TNLConfig.from_preset("cpu-tiny")
model = la.TransNormerLLM(cfg).eval()
ids = torch.randint(0, cfg.vocab_size, (2, 12))
loss = model(ids, labels=ids).loss
assert torch.isfinite(loss), loss
gen = la.generate(model, ids[:, :4], max_new_tokens=5, top_k=1)  # top_k=1: greedy, uses TNLCache
gen = gen[0] if isinstance(gen, tuple) else gen
assert len(gen) == 2, gen
h, W = torch.randn(6, 32), torch.randn(50, 32)
lab = torch.randint(0, 50, (6,))
assert torch.allclose(la.linear_cross_entropy(h, W, lab), torch.nn.functional.cross_entropy(h @ W.T, lab), atol=1e-4)
with la.kernel_options(split=False):
    assert la.current_kernel_options().split is False
assert la.current_kernel_options() == la.KernelOptions()
missing = [n for n in la.__all__ if not hasattr(la, n)]
assert not missing, missing
print("smoke test passed:", len(la.__all__), "public names,", sys.version.split()[0], "torch", torch.__version__)
