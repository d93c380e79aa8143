"""TNL model tests: recurrent decoding vs the parallel forward, packing, training, checkpoints,
torch.compile, preset sizes, and the LightningAttention drop-in. CPU, float32, a few seconds each."""
import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lightning_attn as la
from lightning_attn.model import PAPER_PARAM_COUNTS, TNLConfig, TransNormerLLM
from lightning_attn.modules import LRPE, LightningAttention
from reference import lightning_attn_ref

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def tiny_config(**kw):
    base = dict(vocab_size=101, d_model=32, n_layers=2, n_heads=2, glu_dim=48, tie_embeddings=False)
    base.update(kw)
    return TNLConfig(**base)


def tiny_model(seed=0, **kw):
    torch.manual_seed(seed)
    return TransNormerLLM(tiny_config(**kw)).eval()


# ----------------------------------------------------------------------------- recurrent == parallel


# float32 on CUDA feeds bf16 products to the tensor cores (README: contract); the CPU is exact float32.
DECODE_TOL = {"cpu": dict(atol=2e-5, rtol=1e-5), "cuda": dict(atol=2e-2, rtol=2e-2)}


def test_decode_one_by_one_matches_forward(device):
    """Layer 0 (LRPE, Dk = 2D) and layer 1 (plain) both run through the decode op."""
    model = tiny_model().to(device)
    assert model.blocks[0].token_mixer.lrpe is not None and model.blocks[1].token_mixer.lrpe is None
    ids = torch.randint(0, 101, (3, 40), device=device)
    with torch.no_grad():
        full = model(ids).logits  # [3, 40, V]
        cache = model.new_cache()
        steps = [model(ids[:, t:t + 1], cache=cache).logits for t in range(ids.shape[1])]
    torch.testing.assert_close(torch.cat(steps, 1), full, **DECODE_TOL[device])
    assert cache.states[0].shape == (3, 2, 32, 16)  # LRPE layer: Dk = 2 * head_dim
    assert cache.states[1].shape == (3, 2, 16, 16)
    assert cache.offset.tolist() == [40, 40, 40]


@pytest.mark.parametrize("chunks", [(7, 9, 1, 1, 13), (1, 20), (39, 1)])
def test_chunked_prefill_then_decode_matches_forward(device, chunks):
    model = tiny_model(1).to(device)
    ids = torch.randint(0, 101, (2, sum(chunks)), device=device)
    with torch.no_grad():
        full = model(ids).logits
        cache, outs, t = model.new_cache(), [], 0
        for n in chunks:
            outs.append(model(ids[:, t:t + n], cache=cache).logits)
            t += n
    torch.testing.assert_close(torch.cat(outs, 1), full, **DECODE_TOL[device])


def test_position_offset_and_packed_documents():
    """cu_seqlens: positions restart and states reset per document; position_offset shifts LRPE."""
    model = tiny_model(2)
    docs = [torch.randint(0, 101, (n,)) for n in (5, 17, 1, 9)]
    cu = torch.tensor([0, 5, 22, 23, 32], dtype=torch.int32)
    with torch.no_grad():
        packed = model(torch.cat(docs)[None], cu_seqlens=cu).logits[0]
        alone = torch.cat([model(d[None]).logits[0] for d in docs])
        torch.testing.assert_close(packed, alone, atol=2e-5, rtol=1e-5)
        # per-sequence offsets: a continuation after a prefix equals the tail of the full forward
        ids = torch.randint(0, 101, (2, 12))
        full = model(ids).logits
        cache = model.new_cache()
        model(ids[:, :5], cache=cache)
        torch.testing.assert_close(model(ids[:, 5:], cache=cache).logits, full[:, 5:], atol=2e-5, rtol=1e-5)
        # without state, an offset only moves the LRPE positions: offset 0 tensor == int 0
        torch.testing.assert_close(model(ids, position_offset=torch.zeros(2, dtype=torch.long)).logits, full)
        assert not torch.allclose(model(ids, position_offset=7).logits, full)


def test_lrpe_is_relative():
    lrpe = LRPE(num_heads=2, head_dim=8)
    q, k = torch.randn(1, 1, 2, 8), torch.randn(1, 1, 2, 8)
    def score(tq, tk):
        return (lrpe(q, torch.tensor([[tq]])) * lrpe(k, torch.tensor([[tk]]))).sum(-1)
    torch.testing.assert_close(score(10, 3), score(107, 100), atol=1e-5, rtol=1e-5)


def test_sglu_is_the_two_projection_glu_and_loads_separate_weights():
    """SGLU's one vu_proj GEMM == (x W_v * x W_u) W_o; a state dict with v_proj / u_proj loads."""
    torch.manual_seed(0)
    m = la.SGLU(8, 12).double()
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    w_v, w_u = m.vu_proj.weight[:12], m.vu_proj.weight[12:]
    torch.testing.assert_close(m(x), ((x @ w_v.T) * (x @ w_u.T)) @ m.o_proj.weight.T, rtol=0, atol=1e-12)
    old = {"v_proj.weight": w_v.detach().clone(), "u_proj.weight": w_u.detach().clone(),
           "o_proj.weight": m.o_proj.weight.detach().clone()}
    m2 = la.SGLU(8, 12).double()
    m2.load_state_dict(old)
    assert torch.equal(m2.vu_proj.weight, m.vu_proj.weight)
    model = tiny_model()
    sd = {}
    for k, t in model.state_dict().items():  # the same model in the two-projection layout
        if k.endswith("channel_mixer.vu_proj.weight"):
            base = k[: -len("vu_proj.weight")]
            sd[base + "v_proj.weight"], sd[base + "u_proj.weight"] = t.chunk(2)
        else:
            sd[k] = t
    fresh = tiny_model(seed=1)
    fresh.load_state_dict(sd)
    ids = torch.randint(0, 101, (2, 9))
    assert torch.equal(fresh(ids).logits, model(ids).logits)


def test_slopes_buffer_and_sequence_parallel_hook():
    model = tiny_model(n_layers=3)
    gla = [b.token_mixer for b in model.blocks]
    assert all(not m.slope.requires_grad for m in gla)
    assert not any("slope" in k for k in model.state_dict())  # non-persistent
    torch.testing.assert_close(gla[1].slope, la.tnl_slopes(2, 1, 3))
    assert all(m.sp_group is None for m in gla)
    sentinel = object()
    model.set_sequence_parallel(sentinel)
    assert all(m.sp_group is sentinel for m in gla)
    model.set_sequence_parallel(None)


# ----------------------------------------------------------------------------- training


def test_loss_ignore_index_and_gradient_checkpointing():
    model = tiny_model(3).train()
    ids = torch.randint(0, 101, (2, 16))
    labels = torch.randint(0, 101, (2, 16))
    labels[:, :4] = -100
    out = model(ids, labels=labels)
    ref = F.cross_entropy(out.logits[:, 4:].reshape(-1, 101), labels[:, 4:].reshape(-1))
    torch.testing.assert_close(out.loss, ref)
    out.loss.backward()
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    for n_ckpt in (None, 1):  # every block, then the first block only (selective checkpointing)
        model.zero_grad()
        model.config.gradient_checkpointing, model.config.checkpoint_layers = True, n_ckpt
        model(ids, labels=labels).loss.backward()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.grad, g[n], atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.parametrize("tied", [False, True])
def test_loss_without_logits_equals_loss_from_logits(tied):
    model = tiny_model(4, tie_embeddings=tied).train()
    ids = torch.randint(0, 101, (3, 21))
    labels = torch.randint(0, 101, (3, 21))
    labels[0, :7] = -100
    ref = model(ids, labels=labels)
    ref.loss.backward()
    g = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    out = model(ids, labels=labels, return_logits=False)
    assert out.logits is None
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-6)
    out.loss.backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g[n], atol=1e-6, rtol=1e-5, msg=n)


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = TransNormerLLM(tiny_config(vocab_size=64, d_model=64, n_heads=4, glu_dim=128)).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids = torch.randint(0, 64, (4, 33))
    x, y = ids[:, :-1], ids[:, 1:]
    first = None
    for _ in range(60):
        loss = model(x, labels=y).loss
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > math.log(64) - 0.5  # starts near uniform (4.16 nats)
    assert loss.item() < 0.1, f"did not overfit: loss {loss.item():.3f}"


def _train_script():
    spec = importlib.util.spec_from_file_location("train_tnl", ROOT / "examples" / "train_tnl.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("arch,dropout", [("tnl", "0.1"), ("transformer", "0.0")])
def test_checkpoint_resume_continues_exactly(tmp_path, arch, dropout):
    """6 steps in one go == 3 steps, checkpoint, a new process-like start from it, 3 more
    (with dropout: the RNG state travels in the checkpoint)."""
    tr = _train_script()
    common = ["--arch", arch, "--dropout", dropout, "--preset", "cpu-tiny", "--d-model", "32", "--n-layers", "2", "--n-heads", "2",
              "--glu-dim", "64", "--seq-len", "32", "--batch-size", "2", "--max-steps", "6", "--warmup", "2",
              "--eval-every", "0", "--eval-tokens", "256", "--no-progress", "--lr", "1e-2", "--max-minutes", "0"]
    full = tr.train(tr.get_args(common + ["--out", str(tmp_path / "full")]))
    tr.train(tr.get_args(common + ["--out", str(tmp_path / "part"), "--stop-at-step", "3"]))
    torch.manual_seed(999)  # a fresh process would not share the RNG state: the checkpoint must restore it
    assert (tmp_path / "part" / "checkpoint" / "optimizer.safetensors").exists()
    resumed = tr.train(tr.get_args(common + ["--out", str(tmp_path / "part"), "--resume", "auto"]))
    assert [s for s, _ in resumed["train_losses"]] == [1, 2, 3, 4, 5, 6]
    assert resumed["train_losses"] == full["train_losses"]  # bit-identical losses after the resume
    assert resumed["final_val_ppl"] == pytest.approx(full["final_val_ppl"], rel=1e-6)
    assert (tmp_path / "full" / "loss_curve.png").exists()


# ----------------------------------------------------------------------------- compile


def test_torch_compile_fullgraph_matches_eager():
    torch._dynamo.reset()
    model = tiny_model(4)
    ids, labels = torch.randint(0, 101, (2, 24)), torch.randint(0, 101, (2, 24))
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        eager = model(ids, labels=labels)
        comp = compiled(ids, labels=labels)
    torch.testing.assert_close(comp.logits, eager.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(comp.loss, eager.loss, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- presets


@pytest.mark.parametrize("name", sorted(PAPER_PARAM_COUNTS))
def test_preset_parameter_counts_match_paper(name):
    with torch.device("meta"):
        model = TransNormerLLM(TNLConfig.from_preset(name))
    n = model.num_params()
    assert abs(n / PAPER_PARAM_COUNTS[name] - 1) < 0.03, f"{name}: {n:,} vs paper {PAPER_PARAM_COUNTS[name]:,}"


def test_wikitext_preset_is_about_45M():
    with torch.device("meta"):
        model = TransNormerLLM(TNLConfig.from_preset("wikitext-45M"))
    assert 43e6 < model.num_params() < 47e6
    assert model.lm_head.weight is model.embed.weight  # tied


# ----------------------------------------------------------------------------- drop-in attention


def _reference_mha(m: LightningAttention, x):
    """The same math in plain PyTorch, [B, T, E] -> [B, T, E]."""
    B, T, E = x.shape
    H, D = m.num_heads, m.head_dim
    q, k, v = F.linear(x, m.in_proj_weight, m.in_proj_bias).split(E, -1)
    q, k = F.silu(q), F.silu(k)
    o, _ = lightning_attn_ref(q.view(B, T, H, D), k.view(B, T, H, D), v.view(B, T, H, D), m.slope, m.scale)
    o = o.to(x.dtype)
    o = o.reshape(B, T, E)
    o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + m.norm_eps)
    return m.out_proj(o)


@pytest.mark.parametrize("batch_first", [True, False])
def test_lightning_attention_dropin_matches_reference(batch_first):
    torch.manual_seed(0)
    E, H, B, T = 48, 3, 2, 37
    m = LightningAttention(E, H, batch_first=batch_first)
    x = torch.randn(B, T, E)
    inp = x if batch_first else x.transpose(0, 1)
    out, w = m(inp, inp, inp)
    assert w is None
    out = out if batch_first else out.transpose(0, 1)
    torch.testing.assert_close(out, _reference_mha(m, x), atol=1e-4, rtol=1e-4)
    # nn.MultiheadAttention call style with the causal mask
    mask = nn.Transformer.generate_square_subsequent_mask(T)
    out2, _ = m(inp, inp, inp, attn_mask=mask, need_weights=False)
    torch.testing.assert_close(out2 if batch_first else out2.transpose(0, 1), out if batch_first else out)
    with pytest.raises(ValueError, match="causal"):
        m(inp, inp, inp, attn_mask=torch.zeros(T, T))
    # gradients flow into every parameter
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())


def test_lightning_attention_swaps_into_a_model():
    """One line changes nn.MultiheadAttention into LightningAttention."""
    torch.manual_seed(0)
    for attn_cls in (nn.MultiheadAttention, LightningAttention):
        attn = attn_cls(32, 4, batch_first=True)
        x = torch.randn(2, 10, 32)
        y, _ = attn(x, x, x, need_weights=False, attn_mask=nn.Transformer.generate_square_subsequent_mask(10),
                    is_causal=True)
        assert y.shape == x.shape
    # causality: the output at t does not depend on inputs after t
    x2 = x.clone()
    x2[:, 6:] += 1.0
    y2, _ = attn(x2, x2, x2)
    torch.testing.assert_close(y2[:, :6], y[:, :6])


def test_cache_starts_at_position_offset():
    """A cache's first call starts at position_offset (int or per-sequence), then counts on."""
    model = tiny_model(5)
    ids = torch.randint(0, 101, (2, 10))
    off = torch.tensor([3, 11])
    with torch.no_grad():
        full = model(ids, position_offset=off).logits
        cache = model.new_cache()
        a = model(ids[:, :4], cache=cache, position_offset=off).logits
        b = model(ids[:, 4:], cache=cache).logits
    torch.testing.assert_close(torch.cat([a, b], 1), full, atol=2e-5, rtol=1e-5)
    assert cache.offset.tolist() == [13, 21]


def test_dtype_casts_keep_float32_slopes():
    """model.to(bfloat16) casts weights, not the decay slopes (the op needs them float32 and exact)."""
    model = tiny_model(6).to(torch.bfloat16)
    assert all(b.token_mixer.slope.dtype == torch.float32 for b in model.blocks)
    torch.testing.assert_close(model.blocks[1].token_mixer.slope, la.tnl_slopes(2, 1, 2))
    out = model(torch.randint(0, 101, (2, 9))).logits
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    with torch.device("meta"):
        big = TransNormerLLM(tiny_config())
    big.to_empty(device="cpu")  # materialised from meta: slopes recomputed, not garbage
    torch.testing.assert_close(big.blocks[0].token_mixer.slope, la.tnl_slopes(2, 0, 2))
