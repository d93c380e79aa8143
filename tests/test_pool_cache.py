"""The state pool in the model (TNLCache.pool, TransNormerLLM.new_cache(num_slots=...)) and the
Transformer baseline's per-row KV cache: requests prefilled into slots at different times and
decoded together give the tokens of each prompt generated alone; free slots stay untouched.
CPU, float32."""
import pytest
import torch

from lightning_attn.baseline import Transformer, TransformerConfig
from lightning_attn.cache import TNLCache
from lightning_attn.generation import generate
from lightning_attn.model import TNLConfig, TransNormerLLM

V = 101
PROMPTS = [[5, 17, 3, 99, 42, 8, 1], [7], [64, 2, 2, 30], [11, 12, 13, 14, 15, 16, 17, 18, 19]]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)  # untied, wide init: greedy tokens that do not just repeat
    return TransNormerLLM(TNLConfig(vocab_size=V, d_model=48, n_layers=2, n_heads=3, glu_dim=64,
                                    tie_embeddings=False, init_std=0.2)).eval()


def ids(*xs):
    return torch.tensor(xs, dtype=torch.int32)


@torch.no_grad()
def serve_staggered(model, slots, n_new, num_slots=6):
    """Prompt i enters slot slots[i] after i decode steps of those already in; every step runs
    over all num_slots rows (-1 where free). Returns each prompt's n_new greedy tokens."""
    cache = model.new_cache(num_slots=num_slots)
    rows = torch.full((num_slots,), -1, dtype=torch.int32)
    tok = torch.zeros(num_slots, dtype=torch.long)
    out = {i: [] for i in range(len(slots))}
    step = 0
    while any(len(o) < n_new for o in out.values()):
        if step < len(slots):  # admit one request per step
            s = slots[step]
            cache.reset_slots(ids(s))
            cache.use_slots(ids(s))
            tok[s] = model(torch.tensor([PROMPTS[step]]), cache=cache).logits[0, -1].argmax()
            rows[s] = s
            out[step].append(int(tok[s]))
        cache.use_slots(rows)
        tok = model(tok[:, None], cache=cache).logits[:, -1].argmax(-1)
        for i, s in enumerate(slots[: step + 1]):
            if len(out[i]) < n_new:
                out[i].append(int(tok[s]))
        step += 1
    return [out[i] for i in range(len(slots))], cache


def test_staggered_requests_in_slots_equal_each_prompt_alone(model):
    alone = [list(generate(model, [p], max_new_tokens=8, temperature=0)[0]) for p in PROMPTS]
    got, cache = serve_staggered(model, [4, 0, 5, 2], 8)
    assert got == alone
    assert len(set(map(tuple, alone))) > 1  # the prompts do give different continuations
    # each slot's offset counts the tokens its request consumed (prompt + fed tokens)
    # the last request entered at step 3 and took 7 more steps: slot 4 was fed a token in all 10
    assert cache.offset[4] == len(PROMPTS[0]) + 3 + 7


def test_free_slots_are_untouched_bit_for_bit(model):
    cache = model.new_cache(num_slots=5)
    for s in cache.states:
        s.normal_()
    before = [s.clone() for s in cache.states]
    off = cache.offset.clone()
    cache.use_slots(ids(2))
    model(torch.tensor([[1, 2, 3]]), cache=cache)
    cache.use_slots(ids(-1, 2, -1, -1, -1))
    model(torch.tensor([[4], [5], [6], [7], [8]]), cache=cache)
    for s, s0 in zip(cache.states, before):
        for slot in (0, 1, 3, 4):
            assert torch.equal(s[slot], s0[slot])
        assert not torch.equal(s[2], s0[2])
    assert cache.offset.tolist() == [off[0], off[1], 4, off[3], off[4]]


def test_packed_prefill_into_slots_equals_dense_caches(model):
    a, b = PROMPTS[0], PROMPTS[3]
    cache = model.new_cache(num_slots=4)
    cache.use_slots(ids(3, 1))
    cu = torch.tensor([0, len(a), len(a) + len(b)], dtype=torch.int32)
    logits = model(torch.tensor([a + b]), cache=cache, cu_seqlens=cu).logits[0]
    for p, slot, last in ((a, 3, len(a) - 1), (b, 1, len(a) + len(b) - 1)):
        dense = model.new_cache()
        ref = model(torch.tensor([p]), cache=dense).logits[0, -1]
        torch.testing.assert_close(logits[last], ref, rtol=1e-5, atol=1e-5)
        for s, d in zip(cache.states, dense.states):
            torch.testing.assert_close(s[slot], d[0], rtol=1e-5, atol=1e-6)
        assert cache.offset[slot] == len(p)


def test_pool_state_shapes_follow_lrpe(model):
    cache = model.new_cache(num_slots=3)
    D = model.config.head_dim
    assert [tuple(s.shape) for s in cache.states] == [(3, 3, 2 * D, D), (3, 3, D, D)]  # LRPE-d in layer 0


@torch.no_grad()
def test_transformer_per_row_kv_cache_equals_each_prompt_alone():
    torch.manual_seed(0)
    m = Transformer(TransformerConfig(vocab_size=V, d_model=48, n_layers=2, n_heads=3, ffn_dim=64,
                                      tie_embeddings=False, init_std=0.2)).eval()
    prompts, n_new, L = PROMPTS[:3], 6, 16
    alone = [m.generate(torch.tensor([p]), n_new, temperature=0)[0].tolist() for p in prompts]
    kv = m.new_cache(3, L).make_static(per_row=True)
    tok = torch.zeros(3, dtype=torch.long)
    for r, p in enumerate(prompts):
        one = m.new_cache(1, len(p))
        tok[r] = m(torch.tensor([p]), cache=one).logits[0, -1].argmax()
        for dst, src in zip(kv.k + kv.v, one.k + one.v):
            dst[r, :, : len(p)] = src[0]
        kv.length[r] = len(p)
    got = [[int(t)] for t in tok]
    for _ in range(n_new - 1):
        tok = m(tok[:, None], cache=kv).logits[:, -1].argmax(-1)
        for r in range(3):
            got[r].append(int(tok[r]))
    assert got == alone


@pytest.mark.parametrize("call, match", [
    (lambda m: TNLCache(2).use_slots(ids(0)), "not a pool"),
    (lambda m: m.new_cache(num_slots=2).use_slots(torch.tensor([0])), "slot_ids must be a 1-D int32"),
    (lambda m: m.new_cache(num_slots=0), "num_slots must be at least 1"),
    (lambda m: m.new_cache(num_slots=2).index_select(torch.tensor([0])), "a pool keeps its slots"),
    (lambda m: m.new_cache(num_slots=2).begin_speculation(advance=False), "not supported on a state pool"),
])
def test_pool_misuse_raises(model, call, match):
    with pytest.raises((ValueError, RuntimeError), match=match):
        call(model)


@pytest.mark.parametrize("every", [64, 50], ids=["one_pass", "two_pass"])
@torch.no_grad()
def test_prefix_checkpoints_seed_a_slot_that_continues_like_the_whole_prompt(model, every):
    """Prefix caching: a prefill with checkpoint_every keeps each layer's state every N tokens;
    a slot seeded with the checkpoint after 2N tokens (load_states) and prefilled with the rest of
    the prompt has the states, offset, logits and next tokens of the slot that read it whole."""
    torch.manual_seed(1)
    prompt = torch.randint(0, V, (1, 2 * every + 37))
    cache = model.new_cache(num_slots=4)
    cache.checkpoint_every = every
    cache.use_slots(ids(0))
    whole = model(prompt, cache=cache).logits[0, -1]
    for layer, (c, pool) in enumerate(zip(cache.checkpoints, cache.states)):
        assert c.shape == (1, 3, *pool.shape[1:]), layer
        torch.testing.assert_close(c[:, 2], pool[:1])  # past the prompt's end: its final state
    prefix = [c[:, 1] for c in cache.checkpoints]  # after 2N tokens
    cache.checkpoint_every = None
    cache.load_states(ids(2), prefix, 2 * every)
    cache.use_slots(ids(2))
    rest = model(prompt[:, 2 * every:], cache=cache).logits[0, -1]
    torch.testing.assert_close(rest, whole, rtol=1e-5, atol=1e-5)
    assert cache.offset.tolist() == [prompt.shape[1], 0, prompt.shape[1], 0]
    for pool in cache.states:
        torch.testing.assert_close(pool[2], pool[0], rtol=1e-5, atol=1e-5)
        assert pool[1].abs().max() == 0 and pool[3].abs().max() == 0  # other slots untouched
    tok = whole.argmax().expand(4).clone()[:, None]
    cache.use_slots(torch.tensor([0, -1, 2, -1], dtype=torch.int32))
    nxt = model(tok, cache=cache).logits[:, -1]
    torch.testing.assert_close(nxt[2], nxt[0], rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_prefix_checkpoints_of_a_dense_cache_equal_prefills_of_the_prefixes(model):
    torch.manual_seed(2)
    prompt = torch.randint(0, V, (2, 150))
    cache = model.new_cache()
    cache.checkpoint_every = 64
    model(prompt, cache=cache)
    for j, n in enumerate((64, 128, 150)):
        short = model.new_cache()
        model(prompt[:, :n], cache=short)
        for layer in range(len(cache.states)):
            torch.testing.assert_close(cache.checkpoints[layer][:, j], short.states[layer], rtol=1e-5, atol=1e-6)


def test_load_states_checks_its_arguments(model):
    cache = model.new_cache(num_slots=2)
    good = [s[:1].clone() for s in cache.states]
    with pytest.raises(ValueError, match="one tensor per layer"):
        cache.load_states(ids(0), good[:1], 3)
    with pytest.raises(ValueError, match=r"states\[0\] must have shape"):
        cache.load_states(ids(0), [s[:, :1] for s in cache.states], 3)
    with pytest.raises(RuntimeError, match="not a pool"):
        model.new_cache().load_states(ids(0), good, 3)


@torch.no_grad()
def test_packed_prefill_with_checkpoints_into_slots(model):
    """Two packed prompts into slots 3 and 1 (and a row without a slot) with checkpoints: each
    sequence's checkpoints and final state are those of its prompt prefilled alone."""
    torch.manual_seed(3)
    a, b, c = (torch.randint(0, V, (n,)).tolist() for n in (70, 140, 9))
    cache = model.new_cache(num_slots=4)
    cache.checkpoint_every = 64
    cache.use_slots(ids(3, 1, -1))
    cu = torch.tensor([0, 70, 210, 219], dtype=torch.int32)
    model(torch.tensor([a + b + c]), cache=cache, cu_seqlens=cu)
    for n, (p, slot) in enumerate(((a, 3), (b, 1))):
        dense = model.new_cache()
        dense.checkpoint_every = 64
        model(torch.tensor([p]), cache=dense)
        for layer, (s, d) in enumerate(zip(cache.states, dense.states)):
            torch.testing.assert_close(s[slot], d[0], rtol=1e-5, atol=1e-6)
            J = dense.checkpoints[layer].shape[1]
            torch.testing.assert_close(cache.checkpoints[layer][n, :J], dense.checkpoints[layer][0], rtol=1e-5, atol=1e-6)
    for s in cache.states:  # the row without a slot kept nothing
        assert s[0].abs().max() == 0 and s[2].abs().max() == 0
