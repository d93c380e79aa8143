"""transformers integration (skipped without transformers): generate with left padding,
save_pretrained / from_pretrained through the Auto classes, and the HF loss convention."""
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from lightning_attn.generation import generate  # noqa: E402
from lightning_attn.hf import TNLForCausalLM, TNLHFConfig  # noqa: E402
from lightning_attn.model import TNLConfig  # noqa: E402

PROMPTS = [[5, 17, 3, 99, 42, 8, 1], [7], [64, 2, 2, 30]]
PAD = 100


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: see conftest


def hf_model(tied=False):
    torch.manual_seed(0)
    cfg = TNLHFConfig(vocab_size=101, d_model=48, n_layers=2, n_heads=3, glu_dim=64, init_std=0.2,
                      tie_word_embeddings=tied, bos_token_id=0, eos_token_id=PAD, pad_token_id=PAD)
    return TNLForCausalLM(cfg).eval()


def left_padded(prompts):
    T = max(map(len, prompts))
    ids = torch.tensor([[PAD] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def test_generate_left_padded_batch_matches_native_generate():
    model = hf_model()
    ids, mask = left_padded(PROMPTS)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert out[:, ids.shape[1]:].tolist() == generate(model.model, PROMPTS, 8, temperature=0)


def test_beam_search_on_the_pool_equals_recomputing():
    """Beam search reorders the pool rows (reorder_cache); without a cache every step recomputes
    the whole prefix: the same beams."""
    model = hf_model()
    ids = torch.tensor([[5, 17, 3, 99], [64, 2, 2, 30]])
    kw = dict(num_beams=3, max_new_tokens=6, do_sample=False, early_stopping=False)
    cached = model.generate(ids, **kw)
    recomputed = model.generate(ids, use_cache=False, **kw)
    assert cached.tolist() == recomputed.tolist()


@pytest.mark.parametrize("tied", [True, False])
def test_save_pretrained_from_pretrained_auto(tmp_path, tied):
    model = hf_model(tied)
    model.save_pretrained(tmp_path)
    loaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, TNLForCausalLM)
    assert (loaded.model.lm_head.weight is loaded.model.embed.weight) == tied
    ids = torch.randint(0, 101, (2, 13))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)
    ids, mask = left_padded(PROMPTS)
    a = model.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    b = loaded.generate(ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert a.tolist() == b.tolist()


def test_hf_loss_shifts_labels():
    model = hf_model()
    ids = torch.randint(0, 101, (2, 16))
    with torch.no_grad():
        hf_loss = model(ids, labels=ids).loss
        native = model.model(ids[:, :-1], labels=ids[:, 1:]).loss
    torch.testing.assert_close(hf_loss, native)


def test_config_roundtrip():
    cfg = TNLConfig.from_preset("wikitext-45M")
    assert TNLHFConfig.from_tnl_config(cfg).to_tnl_config() == cfg


def test_package_imports_without_transformers():
    code = ("import sys; sys.modules['transformers'] = None; import lightning_attn; "
            "from lightning_attn.model import TransNormerLLM, TNLConfig; from lightning_attn import generation")
    subprocess.run([sys.executable, "-c", code], check=True)
