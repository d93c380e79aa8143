"""Generation tests: batches of prompts of different lengths, sampling options, stop tokens,
the Transformer baseline's KV cache, and the bundled tokenizer. CPU, float32."""
import pytest
import torch

from lightning_attn.baseline import Transformer, TransformerConfig
from lightning_attn.generation import generate, sample_logits
from lightning_attn.model import TNLConfig, TransNormerLLM

V = 101


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


@pytest.fixture(scope="module")
def model():
    # untied and a wider init so that greedy decoding does not just repeat the last token
    torch.manual_seed(0)
    m = TransNormerLLM(TNLConfig(vocab_size=V, d_model=48, n_layers=2, n_heads=3, glu_dim=64,
                                 tie_embeddings=False, init_std=0.2))
    return m.eval()


PROMPTS = [[5, 17, 3, 99, 42, 8, 1], [7], [64, 2, 2, 30], [11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23]]


def test_batch_of_different_lengths_equals_each_prompt_alone(model):
    batch = generate(model, PROMPTS, max_new_tokens=12, temperature=0)
    alone = [generate(model, [p], max_new_tokens=12, temperature=0)[0] for p in PROMPTS]
    assert batch == alone
    assert all(len(t) == 12 for t in batch)
    assert len({tuple(t) for t in batch}) > 1 and any(len(set(t)) > 1 for t in batch)  # not degenerate


def test_generated_logits_equal_the_full_forward(model):
    """Each step's logits (packed prefill, then decode steps) == one forward over prompt + tokens."""
    tokens, logits = generate(model, PROMPTS, max_new_tokens=8, temperature=0, return_logits=True)
    for i, p in enumerate(PROMPTS):
        seq = torch.tensor(p + tokens[i])[None]
        with torch.no_grad():
            full = model(seq).logits[0, len(p) - 1: len(p) - 1 + 8]  # [8, V]
        torch.testing.assert_close(logits[i], full, atol=1e-4, rtol=1e-4)


def test_tensor_prompts_and_model_generate(model):
    ids = torch.tensor([PROMPTS[0], PROMPTS[0]])
    out = model.generate(ids, max_new_tokens=5, temperature=0)
    assert out[0] == out[1] == generate(model, [PROMPTS[0]], 5, temperature=0)[0]


def test_stop_tokens(model):
    free = generate(model, PROMPTS, max_new_tokens=12, temperature=0)
    stop = free[0][3]
    out = generate(model, PROMPTS, max_new_tokens=12, temperature=0, stop_tokens=[stop])
    for f, o in zip(free, out):
        if stop in f:
            assert o == f[: f.index(stop) + 1]  # ends right after the stop token
        else:
            assert o == f


def test_sampling_options(model):
    greedy = generate(model, PROMPTS, 6, temperature=0)
    assert generate(model, PROMPTS, 6, temperature=1.0, top_k=1) == greedy
    assert generate(model, PROMPTS, 6, temperature=0.7, top_p=1e-6) == greedy
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = generate(model, PROMPTS, 10, temperature=1.5, top_k=20, top_p=0.9, generator=g1)
    s2 = generate(model, PROMPTS, 10, temperature=1.5, top_k=20, top_p=0.9, generator=g2)
    assert s1 == s2  # reproducible with a generator
    assert s1 != greedy


def test_sample_logits_support():
    torch.manual_seed(0)
    logits = torch.randn(4, 50)
    top5 = logits.topk(5).indices
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        tok = sample_logits(logits, temperature=1.0, top_k=5, generator=g)
        assert all(t in row for t, row in zip(tok.tolist(), top5.tolist()))
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    seen = {int(sample_logits(probs, 1.0, top_p=0.7, generator=g)) for _ in range(200)}
    assert seen == {0, 1}  # 0.5 + 0.3 reaches 0.7; 2 and 3 are cut
    assert sample_logits(logits, 0).tolist() == logits.argmax(-1).tolist()


def _baseline():
    torch.manual_seed(0)
    return Transformer(TransformerConfig(vocab_size=V, d_model=48, n_layers=2, n_heads=3, ffn_dim=64,
                                         tie_embeddings=False, init_std=0.2)).eval()


def test_transformer_baseline_kv_cache_generate():
    m = _baseline()
    prompts = torch.randint(0, V, (3, 9))
    out = m.generate(prompts, max_new_tokens=10, temperature=0)  # [3, 10]
    seq = prompts
    with torch.no_grad():
        for _ in range(10):  # no cache: recompute the whole sequence each step
            seq = torch.cat([seq, m(seq).logits[:, -1].argmax(-1, keepdim=True)], 1)
    assert out.tolist() == seq[:, 9:].tolist()


@pytest.mark.parametrize("compile_step", [True, "default"])
def test_transformer_compiled_decode_step_equals_eager(compile_step):
    m = _baseline()
    prompts = torch.randint(0, V, (2, 7))
    want = m.generate(prompts, max_new_tokens=8, temperature=0)
    assert torch.equal(m.generate(prompts, max_new_tokens=8, temperature=0, compile_step=compile_step), want)


def test_transformer_cuda_graph_needs_a_cuda_model():
    with pytest.raises(ValueError, match="cuda_graph=True needs a model on a CUDA device"):
        _baseline().generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=2, cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("compile_step", [False, True], ids=["graph", "compiled_graph"])
def test_transformer_cuda_graph_decode_equals_eager(compile_step):
    m = _baseline().cuda()
    prompts = torch.randint(0, V, (2, 7), device="cuda")
    want = m.generate(prompts, max_new_tokens=12, temperature=0)
    got = m.generate(prompts, max_new_tokens=12, temperature=0, compile_step=compile_step, cuda_graph=True)
    assert torch.equal(got, want)


def test_transformer_static_kv_cache_equals_dynamic():
    # make_static(): fixed shapes (index_copy_ + masked attention over every slot) for CUDA graphs
    m = _baseline()
    prompts = torch.randint(0, V, (2, 7))
    with torch.no_grad():
        dyn, sta = m.new_cache(2, 20), m.new_cache(2, 20)
        ref = m(prompts, cache=dyn).logits
        assert torch.equal(m(prompts, cache=sta).logits, ref)
        sta.make_static()
        ids = torch.randint(0, V, (2, 3))  # a chunk of 3, then single tokens
        for step in (ids, ids[:, :1], ids[:, 1:2]):
            a, b = m(step, cache=dyn).logits, m(step, cache=sta).logits
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
        assert dyn.length == 12 and isinstance(sta.length, torch.Tensor) and int(sta.length) == 12


def test_bundled_gpt2_tokenizer():
    from lightning_attn.data import EOT_TOKEN, get_tokenizer
    enc = get_tokenizer()
    assert enc.n_vocab == 50257 and enc.eot_token == EOT_TOKEN == 50256
    assert enc.encode("Hello world") == [15496, 995]
    text = " = Valkyria Chronicles III = \n Senjō no Valkyria 3 : Unrecorded Chronicles"
    assert enc.decode(enc.encode(text)) == text


@pytest.mark.parametrize("compile_step", [True, "default"])  # a string: the torch.compile mode
def test_compiled_decode_step_equals_eager(model, compile_step):
    want = generate(model, PROMPTS, max_new_tokens=10, temperature=0)
    assert generate(model, PROMPTS, max_new_tokens=10, temperature=0, compile_step=compile_step) == want


def test_cuda_graph_needs_a_cuda_model(model):
    with pytest.raises(ValueError, match="cuda_graph=True needs a model on a CUDA device"):
        generate(model, PROMPTS, max_new_tokens=2, cuda_graph=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("compile_step", [False, True, "max-autotune-no-cudagraphs"],
                         ids=["graph", "compiled_graph", "max_autotune_graph"])
def test_cuda_graph_decode_equals_eager(model, compile_step):
    m = TransNormerLLM(model.config).cuda().eval()
    m.load_state_dict(model.state_dict())
    want, want_logits = generate(m, PROMPTS, max_new_tokens=16, temperature=0, return_logits=True)
    got, logits = generate(m, PROMPTS, max_new_tokens=16, temperature=0, return_logits=True,
                           compile_step=compile_step, cuda_graph=True)
    if not compile_step:  # the same kernels in the same order: the same numbers
        assert got == want
        torch.testing.assert_close(logits, want_logits, rtol=0, atol=0)
    else:  # inductor fuses the elementwise work differently: logits agree to rounding
        assert got == want
        torch.testing.assert_close(logits, want_logits, rtol=1e-3, atol=1e-3)
