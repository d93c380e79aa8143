"""Optional Hugging Face transformers integration (``pip install transformers``).

    import lightning_attn.hf  # registers "lightning_tnl" with AutoConfig / AutoModelForCausalLM
    from lightning_attn.hf import TNLHFConfig, TNLForCausalLM
    model = TNLForCausalLM(TNLHFConfig.from_tnl_config(TNLConfig.from_preset("wikitext-45M")))
    model.save_pretrained("tnl-45m");  model = AutoModelForCausalLM.from_pretrained("tnl-45m")
    out = model.generate(input_ids, attention_mask=mask, max_new_tokens=20)   # left-padded batches work

The wrapper holds a plain ``TransNormerLLM`` (``.model``) and a ``Cache`` subclass around the
recurrent ``TNLCache``. Left padding is handled without masks: at prefill the real tokens of
each row are packed with ``cu_seqlens`` so pads never enter a state. ``import lightning_attn``
never imports this module, so the package works without transformers.
Written against transformers 5.x (``cache=`` argument); 4.x's ``past_key_values`` name is accepted too.
"""
from dataclasses import fields
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from .cache import TNLCache
from .model import TNLConfig, TransNormerLLM

__all__ = ["TNLHFConfig", "TNLForCausalLM", "TNLHFCache"]

_CACHE_FIELD = "cache" if "cache" in {f.name for f in fields(CausalLMOutputWithPast)} else "past_key_values"


class TNLHFConfig(PretrainedConfig):
    """``TNLConfig`` as a transformers config (same field names)."""

    model_type = "lightning_tnl"

    def __init__(self, vocab_size: int = 50304, d_model: int = 512, n_layers: int = 6, n_heads: int = 8,
                 glu_dim: int = 1280, max_seq_len: int = 512, norm_eps: float = 1e-6, slope_kind: str = "released",
                 lrpe_first_layer: bool = True, init_std: float = 0.02, dropout: float = 0.0,
                 tie_word_embeddings: bool = True,
                 bos_token_id: int = 50256, eos_token_id: int = 50256, pad_token_id: int = 50256, **kwargs):
        self.vocab_size, self.d_model, self.n_layers, self.n_heads = vocab_size, d_model, n_layers, n_heads
        self.glu_dim, self.max_seq_len, self.norm_eps, self.slope_kind = glu_dim, max_seq_len, norm_eps, slope_kind
        self.lrpe_first_layer, self.init_std, self.dropout = lrpe_first_layer, init_std, dropout
        self.hidden_size, self.num_hidden_layers, self.num_attention_heads = d_model, n_layers, n_heads
        super().__init__(tie_word_embeddings=tie_word_embeddings, bos_token_id=bos_token_id,
                         eos_token_id=eos_token_id, pad_token_id=pad_token_id, **kwargs)

    @classmethod
    def from_tnl_config(cls, cfg: TNLConfig, **kwargs) -> "TNLHFConfig":
        d = cfg.to_dict()
        d.pop("gradient_checkpointing")
        d.pop("checkpoint_layers")
        d["tie_word_embeddings"] = d.pop("tie_embeddings")
        return cls(**d, **kwargs)

    def to_tnl_config(self) -> TNLConfig:
        return TNLConfig(vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers,
                         n_heads=self.n_heads, glu_dim=self.glu_dim, max_seq_len=self.max_seq_len,
                         tie_embeddings=self.tie_word_embeddings, norm_eps=self.norm_eps, slope_kind=self.slope_kind,
                         lrpe_first_layer=self.lrpe_first_layer, init_std=self.init_std, dropout=self.dropout)


class TNLHFCache(Cache):
    """A transformers ``Cache`` around ``TNLCache`` (per layer float32 state, per-sequence offsets).

    The first forward (the prefill) makes it a state pool of B slots, row b in slot b, so prefill
    and decode steps read and write the pool rows in place (the path of a serving engine).
    ``get_seq_length()`` counts the tokens fed so far, padding included (what generate expects).
    """

    is_compileable = False

    def __init__(self, num_layers: int):
        try:
            super().__init__(layers=[])
        except TypeError:  # transformers 4.x
            super().__init__()
        self.tnl = TNLCache(num_layers)
        self.num_tokens = 0

    def get_seq_length(self, layer_idx: Optional[int] = 0) -> int:
        return self.num_tokens

    def get_max_cache_shape(self, layer_idx: int = 0):
        return None  # no limit: the state has a fixed size

    def reorder_cache(self, beam_idx: Tensor):
        """Beam search: row b continues from the state of row ``beam_idx[b]``."""
        if not self.tnl.is_pool:
            self.tnl = self.tnl.index_select(beam_idx)
            return
        idx = beam_idx.to(self.tnl.offset.device).long()
        for s in self.tnl.states:
            s.copy_(s.index_select(0, idx))
        self.tnl.offset.copy_(self.tnl.offset.index_select(0, idx))

    def __len__(self):
        return self.tnl.num_layers

    def __repr__(self):
        return f"TNLHFCache({self.tnl!r}, num_tokens={self.num_tokens})"


class TNLForCausalLM(PreTrainedModel, GenerationMixin):
    """TransNormerLLM for transformers: ``forward`` (labels shifted inside, HF style), ``generate``,
    ``save_pretrained`` / ``from_pretrained``."""

    config_class = TNLHFConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TNLBlock"]
    _is_stateful = True

    def __init__(self, config: TNLHFConfig):
        super().__init__(config)
        self.model = TransNormerLLM(config.to_tnl_config())
        if config.tie_word_embeddings:
            self._tied_weights_keys = {"model.lm_head.weight": "model.embed.weight"}
        self.post_init()

    def _init_weights(self, module):
        pass  # TransNormerLLM initialises itself (N(0, 0.02), LRPE theta)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        model = super().from_pretrained(*args, **kwargs)
        model.model.reset_buffers()  # the slopes are not saved (non-persistent) and loading starts on meta
        return model

    def _set_gradient_checkpointing(self, enable: bool = True, *args, **kwargs):
        self.model.config.gradient_checkpointing = enable  # TransNormerLLM checkpoints each block

    def get_input_embeddings(self):
        return self.model.embed

    def set_input_embeddings(self, value):
        self.model.embed = value

    def get_output_embeddings(self):
        return self.model.lm_head

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        return False  # our own cache, created in forward

    def forward(self, input_ids: Tensor, attention_mask: Optional[Tensor] = None, cache: Optional[TNLHFCache] = None,
                labels: Optional[Tensor] = None, use_cache: Optional[bool] = None, logits_to_keep: int = 0,
                past_key_values: Optional[TNLHFCache] = None, **kwargs) -> CausalLMOutputWithPast:
        """input_ids ``[B, T]``; attention_mask ``[B, past + T]`` (1 = token, 0 = left padding);
        labels ``[B, T]`` unshifted (HF convention, -100 ignored)."""
        cache = cache if cache is not None else past_key_values
        use_cache = use_cache if use_cache is not None else (cache is not None or not self.training)
        if use_cache and cache is None:
            cache = TNLHFCache(self.config.n_layers)
        B, T = input_ids.shape
        if cache is not None and cache.num_tokens == 0:  # the prefill: a pool of B slots, row b in slot b
            cache.tnl = self.model.new_cache(num_slots=B)
            cache.tnl.use_slots(torch.arange(B, dtype=torch.int32, device=input_ids.device))
        new_mask = attention_mask[:, -T:] if attention_mask is not None else None
        if cache is not None and new_mask is not None and not bool(new_mask.all()):
            if cache.num_tokens != 0:
                raise ValueError("TNLForCausalLM: padding is only supported in the first (prefill) call.")
            h = self._packed_prefill(input_ids, new_mask.bool(), cache.tnl)  # [B, T, C]
        else:
            h = self.model.forward_features(input_ids, cache=cache.tnl if cache is not None else None)
        if cache is not None:
            cache.num_tokens += T
        if logits_to_keep:
            h = h[:, -logits_to_keep:]
        logits = self.model.lm_head(h)  # [B, T, V]
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1),
                                   ignore_index=-100)
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_FIELD: cache if use_cache else None})

    def _packed_prefill(self, input_ids: Tensor, mask: Tensor, cache: TNLCache) -> Tensor:
        """Run only the real (mask == 1) tokens of each row, packed with cu_seqlens; pads get zeros."""
        lengths = mask.sum(1)  # [B]
        if bool((lengths == 0).any()):
            raise ValueError("TNLForCausalLM: every row needs at least one real token.")
        cu_seqlens = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(torch.int32)
        packed = input_ids[mask][None]  # [1, sum(lengths)], row-major keeps each row's order
        h = self.model.forward_features(packed, cache=cache, cu_seqlens=cu_seqlens)[0]  # [total, C]
        out = h.new_zeros(*input_ids.shape, h.shape[-1])
        out[mask] = h
        return out

    def prepare_inputs_for_generation(self, input_ids, cache=None, attention_mask=None, **kwargs):
        cache = cache if cache is not None else kwargs.pop("past_key_values", None)
        if cache is not None and cache.get_seq_length() > 0:
            input_ids = input_ids[:, cache.get_seq_length():]
        kwargs.pop("next_sequence_length", None)
        kwargs.pop("is_first_iteration", None)
        kwargs.pop("position_ids", None)
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "use_cache": kwargs.pop("use_cache", True)}
        inputs[_CACHE_FIELD if _CACHE_FIELD == "cache" else "past_key_values"] = cache
        for k, v in kwargs.items():
            if k in ("logits_to_keep", "output_attentions", "output_hidden_states", "return_dict"):
                inputs[k] = v
        return inputs

    def _reorder_cache(self, cache, beam_idx):
        cache.reorder_cache(beam_idx)
        return cache


AutoConfig.register(TNLHFConfig.model_type, TNLHFConfig, exist_ok=True)
AutoModelForCausalLM.register(TNLHFConfig, TNLForCausalLM, exist_ok=True)
