"""Speculative decoding: TNLCache's speculation (feed, then keep a prefix per sequence) and
speculative_generate, which must give plain greedy decoding's tokens exactly.

The models run in float64 on the CPU, so that greedy argmax has no near-ties between the
one-token steps and the K-token verify forward (different GEMM shapes round differently).
"""
import pytest
import torch

import lightning_attn as la
from lightning_attn.generation import speculative_generate

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def tiny(seed, n_layers=2):
    # untied and a wide init so that greedy decoding does not just repeat the last token
    torch.manual_seed(seed)
    cfg = la.TNLConfig(vocab_size=97, d_model=48, n_layers=n_layers, n_heads=3, glu_dim=64,
                       tie_embeddings=False, init_std=0.2)
    return la.TransNormerLLM(cfg).double().eval()


PROMPTS = [[5, 17, 3, 42, 8], [11], [60, 2, 2, 9, 31, 77, 4, 4, 13]]


@pytest.fixture(scope="module")
def model():
    return tiny(0)


def fed_cache(model, prompts, extra):
    """A cache after the prompts and then the tokens extra[b] one decode step at a time."""
    cache, _ = la.generation._prefill(model, prompts, "cpu")
    for j in range(len(extra[0])):
        model.forward_features(torch.tensor([e[j] for e in extra])[:, None], cache=cache)
    return cache


@pytest.mark.parametrize("advance", [True, False], ids=["draft", "verify"])
def test_accept_keeps_exactly_the_accepted_tokens(model, advance):
    torch.manual_seed(1)
    toks = torch.randint(0, 97, (3, 6))
    kept = torch.tensor([0, 6, 2])
    cache, _ = la.generation._prefill(model, PROMPTS, "cpu")
    cache.begin_speculation(advance=advance)
    if advance:  # a draft feeds one token per forward
        for j in range(toks.shape[1]):
            model.forward_features(toks[:, j:j + 1], cache=cache)
    else:
        model.forward_features(toks, cache=cache)
    cache.accept(kept)
    assert not cache.speculating
    for b, n in enumerate(kept.tolist()):
        ref = fed_cache(model, [PROMPTS[b]], [toks[b, :n].tolist()])
        assert int(cache.offset[b]) == len(PROMPTS[b]) + n
        for layer in range(cache.num_layers):
            torch.testing.assert_close(cache.states[layer][b], ref.states[layer][0], rtol=1e-12, atol=1e-12)


def test_verify_outputs_equal_one_token_steps(model):
    """The K-token forward in speculation mode gives the logits of K decode steps."""
    toks = torch.randint(0, 97, (3, 5), generator=torch.Generator().manual_seed(2))
    cache, _ = la.generation._prefill(model, PROMPTS, "cpu")
    cache.begin_speculation(advance=False)
    many = model.lm_head(model.forward_features(toks, cache=cache))
    cache.accept(torch.zeros(3, dtype=torch.long))
    steps = [model.lm_head(model.forward_features(toks[:, j:j + 1], cache=cache))[:, 0] for j in range(5)]
    torch.testing.assert_close(many, torch.stack(steps, 1), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("K", [1, 3, 7])
@pytest.mark.parametrize("draft_seed", [0, 123], ids=["draft_is_model", "other_draft"])
def test_speculative_equals_greedy(model, K, draft_seed):
    draft = model if draft_seed == 0 else tiny(draft_seed, n_layers=1)
    want = la.generate(model, PROMPTS, max_new_tokens=23, temperature=0)
    got, stats = speculative_generate(model, draft, PROMPTS, max_new_tokens=23, num_draft_tokens=K,
                                      return_stats=True)
    assert got == want
    assert stats["rounds"] >= 1 and 0 <= stats["accepted"] <= stats["drafted"]
    if draft is model:  # a draft that is the model itself agrees on every token
        assert stats["accepted"] == stats["drafted"] > 0


def test_speculative_stop_tokens(model):
    want = la.generate(model, PROMPTS, max_new_tokens=30, temperature=0)
    stop = want[0][4]
    got = speculative_generate(model, tiny(5, n_layers=1), PROMPTS, max_new_tokens=30, num_draft_tokens=4,
                               stop_tokens=[stop])
    ref = la.generate(model, PROMPTS, max_new_tokens=30, temperature=0, stop_tokens=[stop])
    assert got == ref and got[0][-1] == stop


def test_speculative_bad_arguments(model):
    with pytest.raises(ValueError, match="num_draft_tokens must be in"):
        speculative_generate(model, model, PROMPTS, 4, num_draft_tokens=0)
    with pytest.raises(ValueError, match="num_draft_tokens must be in"):
        speculative_generate(model, model, PROMPTS, 4, num_draft_tokens=16)
    other = la.TransNormerLLM(la.TNLConfig(vocab_size=50, d_model=48, n_layers=1, n_heads=3, glu_dim=64)).double()
    with pytest.raises(ValueError, match="vocab_size"):
        speculative_generate(model, other, PROMPTS, 4)
    cache = model.new_cache()
    with pytest.raises(RuntimeError, match="prefill the prompts first"):
        cache.begin_speculation(advance=False)
    with pytest.raises(RuntimeError, match="no speculation is open"):
        cache.accept(torch.zeros(1, dtype=torch.long))
