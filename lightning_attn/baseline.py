"""The same-size Transformer baseline (LLaMA-style) for comparisons with TNL.

Pre-norm blocks with RMSNorm, causal softmax attention through SDPA with rotary positions,
and a SwiGLU MLP; no biases; init N(0, 0.02); the same forward and output as TransNormerLLM,
and a KV-cache ``generate`` for inference benchmarks.

    x0 = Embed(ids)                                              [B, T, C]
    x += Attn(RMSNorm(x));  x += SwiGLU(RMSNorm(x))              (n_layers times)
    logits = RMSNorm(x) W_head                                   [B, T, V]

``TransformerConfig.matching(tnl_config)`` sizes the MLP so that the parameter count equals
TNL's (TNL's layer: 5C^2 + 3C*glu; this one: 4C^2 + 3C*ffn, so ffn = glu + C/3).
"""
from dataclasses import asdict, dataclass, replace
from typing import List, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from .generation import sample_logits
from .graphs import FixedBufferStep, compiled
from .model import CausalLMOutput, TNLConfig, checkpointed, lm_output

__all__ = ["TransformerConfig", "Transformer", "KVCache"]


@dataclass
class TransformerConfig:
    vocab_size: int = 50304
    d_model: int = 512
    n_layers: int = 6
    n_heads: int = 8
    ffn_dim: int = 1448
    max_seq_len: int = 512
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    rope_base: float = 10000.0
    init_std: float = 0.02
    gradient_checkpointing: bool = False
    checkpoint_layers: Optional[int] = None
    dropout: float = 0.0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def matching(cls, tnl: TNLConfig, **overrides) -> "TransformerConfig":
        """The baseline with TNL's width, depth, heads, vocabulary and (to 8) parameter count."""
        ffn = int(round((tnl.glu_dim + tnl.d_model / 3) / 8)) * 8
        cfg = cls(vocab_size=tnl.vocab_size, d_model=tnl.d_model, n_layers=tnl.n_layers, n_heads=tnl.n_heads,
                  ffn_dim=ffn, max_seq_len=tnl.max_seq_len, tie_embeddings=tnl.tie_embeddings,
                  norm_eps=tnl.norm_eps, init_std=tnl.init_std, gradient_checkpointing=tnl.gradient_checkpointing,
                  checkpoint_layers=tnl.checkpoint_layers,
                  dropout=tnl.dropout)
        return replace(cfg, **overrides)

    def to_dict(self):
        return asdict(self)


class KVCache:
    """Preallocated keys and values per layer, ``[B, H, max_len, D]``, and the filled length.

    ``length`` is a Python int (attention reads the filled slice only) or, after
    ``make_static()``, a 0-dim device tensor advanced in place: every decode step then has
    the same shapes (new keys written by index_copy_, attention over all max_len slots with
    a mask), so the step can be captured in a CUDA graph, as with HF's StaticCache.
    ``make_static(per_row=True)``: one length per row (LongTensor ``[B]``), for a server whose
    rows hold requests of different lengths; steps then take one token per row.
    """

    def __init__(self, n_layers: int, batch_size: int, n_heads: int, max_len: int, head_dim: int,
                 dtype=torch.float32, device=None):
        shape = (batch_size, n_heads, max_len, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.length: Union[int, Tensor] = 0

    def make_static(self, per_row: bool = False) -> "KVCache":
        """Turn ``length`` into a device tensor (static shapes from here on); per_row: ``[B]``."""
        if not isinstance(self.length, Tensor):
            self.length = torch.tensor(self.length, dtype=torch.long, device=self.k[0].device)
        if per_row and self.length.dim() == 0:
            self.length = self.length.expand(self.k[0].shape[0]).clone()
        return self

    def advance(self, n: int) -> None:
        if isinstance(self.length, Tensor):
            self.length.add_(n)  # in place: a captured graph advances it on every replay
        else:
            self.length += n


# With a KV cache the key length changes every step. With cuDNN's attention allowed, the eager
# decode step of the 385M baseline took 61 ms on the H200 (run B of session 2), 21 ms without it
# (run C); our reading, not profiled: cuDNN sets up a new plan for every new key length.
_CACHED_SDPA_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def rotary(x: Tensor, positions: Tensor, base: float) -> Tensor:
    """Rotary embedding (rotate-half form). x ``[B, H, T, D]``, positions ``[B or 1, T]``."""
    D = x.shape[-1]
    inv_freq = base ** (-torch.arange(0, D, 2, device=x.device, dtype=torch.float32) / D)  # [D/2]
    angle = positions[:, None, :, None].float() * inv_freq  # [B, 1, T, D/2]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer_idx: int):
        super().__init__()
        self.cfg, self.layer_idx = cfg, layer_idx
        self.qkv_proj = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out_proj = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor, positions: Tensor, cache: Optional[KVCache] = None) -> Tensor:
        B, T, C = x.shape
        H, D = self.cfg.n_heads, self.cfg.head_dim
        q, k, v = self.qkv_proj(x).view(B, T, 3, H, D).permute(2, 0, 3, 1, 4)  # 3 x [B, H, T, D]
        q, k = rotary(q, positions, self.cfg.rope_base), rotary(k, positions, self.cfg.rope_base)
        if cache is None:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            with sdpa_kernel(_CACHED_SDPA_BACKENDS):
                o = self._attend_cached(q, k, v, cache)
        return self.out_proj(o.transpose(1, 2).reshape(B, T, C))  # [B, T, C]

    def _attend_cached(self, q: Tensor, k: Tensor, v: Tensor, cache: KVCache) -> Tensor:
        T, dev = q.shape[2], q.device
        if isinstance(cache.length, Tensor) and cache.length.dim() == 1:
            # one length per row (continuous batching): a one-token step written at each row's
            # length, clamped so that rows without a request stay inside the cache
            if T != 1:
                raise ValueError(f"KVCache with per-row lengths: one token per step, got T = {T}.")
            ck, cv = cache.k[self.layer_idx], cache.v[self.layer_idx]
            idx = cache.length.clamp(max=ck.shape[2] - 1)  # [B]
            rows = torch.arange(q.shape[0], device=dev)
            ck[rows, :, idx] = k[:, :, 0]
            cv[rows, :, idx] = v[:, :, 0]
            mask = torch.arange(ck.shape[2], device=dev) <= idx[:, None]  # [B, max_len]
            return F.scaled_dot_product_attention(q, ck, cv, attn_mask=mask[:, None, None])
        if isinstance(cache.length, Tensor):  # static shapes: write at length, attend to all slots, masked
            ck, cv = cache.k[self.layer_idx], cache.v[self.layer_idx]
            idx = cache.length + torch.arange(T, device=dev)  # [T]
            ck.index_copy_(2, idx, k)
            cv.index_copy_(2, idx, v)
            mask = torch.arange(ck.shape[2], device=dev) <= idx[:, None]  # [T, max_len]
            return F.scaled_dot_product_attention(q, ck, cv, attn_mask=mask)
        start = cache.length
        cache.k[self.layer_idx][:, :, start:start + T] = k
        cache.v[self.layer_idx][:, :, start:start + T] = v
        k, v = cache.k[self.layer_idx][:, :, :start + T], cache.v[self.layer_idx][:, :, :start + T]
        if start == 0:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        if T == 1:
            return F.scaled_dot_product_attention(q, k, v)  # the new token sees everything cached
        mask = torch.arange(start + T, device=dev) <= start + torch.arange(T, device=dev)[:, None]  # chunked prefill
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class SwiGLU(nn.Module):
    """``W_2 (SiLU(x W_1) * x W_3)``."""

    def __init__(self, d_model: int, ffn_dim: int):
        super().__init__()
        self.w1 = nn.Linear(d_model, ffn_dim, bias=False)
        self.w3 = nn.Linear(d_model, ffn_dim, bias=False)
        self.w2 = nn.Linear(ffn_dim, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Block(nn.Module):
    def __init__(self, cfg: TransformerConfig, layer_idx: int):
        super().__init__()
        self.dropout = cfg.dropout
        self.attn_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.attn = Attention(cfg, layer_idx)
        self.mlp_norm = nn.RMSNorm(cfg.d_model, eps=cfg.norm_eps)
        self.mlp = SwiGLU(cfg.d_model, cfg.ffn_dim)

    def forward(self, x: Tensor, positions: Tensor, cache: Optional[KVCache] = None) -> Tensor:
        x = x + F.dropout(self.attn(self.attn_norm(x), positions, cache), self.dropout, self.training)
        return x + F.dropout(self.mlp(self.mlp_norm(x)), self.dropout, self.training)


class Transformer(nn.Module):
    """LLaMA-style causal LM with TransNormerLLM's forward signature and output."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        self.norm = nn.RMSNorm(config.d_model, eps=config.norm_eps)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.apply(self._init_weights)

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)

    def forward(self, input_ids: Tensor, labels: Optional[Tensor] = None, cache: Optional[KVCache] = None,
                position_offset: Union[int, Tensor] = 0, cu_seqlens: Optional[Tensor] = None,
                ignore_index: int = -100, num_logits_to_keep: int = 0, return_logits: bool = True) -> CausalLMOutput:
        """As ``TransNormerLLM.forward`` (labels are the already-shifted targets); no cu_seqlens."""
        if cu_seqlens is not None:
            raise ValueError("Transformer baseline: cu_seqlens (packed documents) is not supported.")
        B, T = input_ids.shape
        if cache is not None:
            position_offset = cache.length
        t = torch.arange(T, device=input_ids.device)
        positions = (position_offset.view(-1, 1) + t) if isinstance(position_offset, Tensor) else (t + position_offset)[None]
        x = F.dropout(self.embed(input_ids), self.config.dropout, self.training)  # [B, T, C]
        for i, block in enumerate(self.blocks):
            if checkpointed(self.config, i) and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(block, x, positions, None, use_reentrant=False)
            else:
                x = block(x, positions, cache)
        if cache is not None:
            cache.advance(T)
        return lm_output(self.lm_head, self.norm(x), labels, ignore_index, num_logits_to_keep, return_logits)

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        return n - self.embed.weight.numel() if non_embedding else n

    def param_groups(self, weight_decay: float) -> List[dict]:
        decay = [p for p in self.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.parameters() if p.dim() < 2]
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def new_cache(self, batch_size: int, max_len: int) -> KVCache:
        p = next(self.parameters())
        c = self.config
        return KVCache(c.n_layers, batch_size, c.n_heads, max_len, c.head_dim, dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def generate(self, prompts: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: Optional[int] = None,
                 top_p: Optional[float] = None, generator: Optional[torch.Generator] = None,
                 compile_step: Union[bool, str] = False, cuda_graph: bool = False) -> Tensor:
        """KV-cache generation for a batch of equal-length prompts ``[B, T]`` -> new tokens ``[B, max_new_tokens]``.

        compile_step, cuda_graph: as ``lightning_attn.generate``; the decode steps then run on the
        static cache (``KVCache.make_static``: attention over all T + max_new_tokens slots with a
        mask), compiled (a string: the torch.compile mode) and/or captured as one CUDA graph.
        """
        B, T = prompts.shape
        if cuda_graph and prompts.device.type != "cuda":
            raise ValueError(f"Transformer.generate: cuda_graph=True needs a model on a CUDA device, got {prompts.device}.")
        cache = self.new_cache(B, T + max_new_tokens)
        logits = self(prompts, cache=cache, num_logits_to_keep=1).logits[:, -1]  # [B, V]
        step = StaticDecodeStep(self, cache, compile_step, cuda_graph) if (compile_step or cuda_graph) else None
        out = []
        for i in range(max_new_tokens):
            tok = sample_logits(logits, temperature, top_k, top_p, generator)  # [B]
            out.append(tok)
            if i < max_new_tokens - 1:
                logits = step(tok) if step else self(tok[:, None], cache=cache).logits[:, -1]
        return torch.stack(out, dim=1)


class StaticDecodeStep(FixedBufferStep):
    """The Transformer's one-token decode step on its cache made static, compiled and/or captured
    as a CUDA graph (the counterpart of ``generation.DecodeStep``). ``step(tok [B])`` returns the
    logits ``[B, V]`` (with a graph: its output buffer, valid until the next call). The capture's
    warm-up steps write keys past the filled length and advance it: the length is restored
    after, and those slots are masked until the next steps overwrite them."""

    def __init__(self, model: Transformer, cache: KVCache, compile: Union[bool, str] = False, cuda_graph: bool = False):
        self.model, self.cache = model, cache.make_static()
        self.fwd = compiled(model, compile)
        self.tok = torch.zeros(cache.k[0].shape[0], dtype=torch.long, device=cache.k[0].device)
        if cuda_graph:
            self.capture([cache.length])

    def _run(self) -> Tensor:
        return self.fwd(self.tok[:, None], cache=self.cache).logits[:, -1]
