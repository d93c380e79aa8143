"""TransNormerLLM (TNL): a causal language model built on Lightning Attention.

Reads top to bottom: config and presets, the model (embedding, blocks, final norm, head),
loss, optimizer groups, generation. The layers live in modules.py, the ops in ops.py.

    x0 = sqrt(C) * Embed(ids)                                   [B, T, C]
    x += GLA(SRMSNorm(x));  x += SGLU(SRMSNorm(x))              (n_layers times; LRPE in layer 0)
    logits = SRMSNorm(x) W_head                                 [B, T, V] (W_head tied to Embed optionally)

Parameter counts of the presets (tied embeddings, GPT-2 BPE vocabulary padded to 50304) against
the TNL paper's table of model sizes; tests/test_model.py counts them on the meta device:

    preset  d     layers heads glu    ours            paper            diff
    385M    1024  24     8     2816   384,959,488     384,974,848      -0.00%
    1B      2048  16     16    5632   992,217,088     992,165,888      +0.01%
    3B      2560  32     20    6912   2,876,049,920   2,876,006,400    +0.00%
    7B      4096  30     32    11008  6,780,620,800   6,780,547,072    +0.00%
    15B     5120  42     40    13824  14,680,724,480  14,486,652,928   +1.34%

The paper's counts equal the blocks plus one d x ~50.3k embedding, i.e. a GPT-2-sized
vocabulary counted once; with the 64000-token vocabulary of TNL's released checkpoints the
385M preset would have 398,984,192 (+3.6%), so the presets default to the padded GPT-2 BPE
(which is also the tokenizer of this repository). Pass ``vocab_size=64000`` for the released one.
"""
import math
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, NamedTuple, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .cache import TNLCache
from .loss import linear_cross_entropy
from .modules import SRMSNorm, TNLBlock, make_positions

__all__ = ["TNLConfig", "TransNormerLLM", "CausalLMOutput", "PRESETS", "PAPER_PARAM_COUNTS"]

GPT2_VOCAB_PADDED = 50304  # GPT-2 BPE's 50257 tokens padded to a multiple of 64


@dataclass
class TNLConfig:
    """TransNormerLLM hyper-parameters. ``TNLConfig.from_preset("wikitext-45M", n_layers=4)``."""

    vocab_size: int = GPT2_VOCAB_PADDED
    d_model: int = 512
    n_layers: int = 6
    n_heads: int = 8
    glu_dim: int = 1280
    max_seq_len: int = 512  # the training context (the model itself has no length limit)
    tie_embeddings: bool = True
    norm_eps: float = 1e-6
    slope_kind: str = "released"  # "released" (TNL's code) or "paper" (eq. 10), see tnl_slopes
    lrpe_first_layer: bool = True  # LRPE-d in layer 0 only, as TNL
    init_std: float = 0.02
    gradient_checkpointing: bool = False
    checkpoint_layers: Optional[int] = None  # with gradient_checkpointing: the first n blocks only (None: all)
    dropout: float = 0.0  # on the embedding and each residual branch (training on small data); TNL: 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "TNLConfig":
        if name not in PRESETS:
            raise ValueError(f"Unknown TNL preset {name!r}; choose one of {sorted(PRESETS)}.")
        return replace(PRESETS[name], **overrides)

    def to_dict(self) -> Dict:
        return asdict(self)


PRESETS: Dict[str, TNLConfig] = {
    # The paper's model sizes (TNL paper, table of model variants; vocabulary: see module docstring).
    "385M": TNLConfig(d_model=1024, n_layers=24, n_heads=8, glu_dim=2816, max_seq_len=2048),
    "1B": TNLConfig(d_model=2048, n_layers=16, n_heads=16, glu_dim=5632, max_seq_len=2048),
    "3B": TNLConfig(d_model=2560, n_layers=32, n_heads=20, glu_dim=6912, max_seq_len=2048),
    "7B": TNLConfig(d_model=4096, n_layers=30, n_heads=32, glu_dim=11008, max_seq_len=2048),
    "15B": TNLConfig(d_model=5120, n_layers=42, n_heads=40, glu_dim=13824, max_seq_len=2048),
    # The WikiText-103 setting (~45M with the GPT-2 BPE vocabulary, tied embeddings, seq 512).
    "wikitext-45M": TNLConfig(d_model=512, n_layers=6, n_heads=8, glu_dim=1280, max_seq_len=512),
    # A few minutes of training on 2 CPU cores (the README's main job).
    "cpu-tiny": TNLConfig(d_model=128, n_layers=2, n_heads=2, glu_dim=384, max_seq_len=128),
}

# The paper's parameter counts of its model variants (TransNormerLLM, arXiv:2307.14995).
PAPER_PARAM_COUNTS: Dict[str, int] = {
    "385M": 384_974_848, "1B": 992_165_888, "3B": 2_876_006_400, "7B": 6_780_547_072, "15B": 14_486_652_928,
}


class CausalLMOutput(NamedTuple):
    """loss: mean cross-entropy over non-ignored targets (or None); logits ``[B, T', V]``."""

    loss: Optional[Tensor]
    logits: Optional[Tensor]  # None when the forward was asked for the loss only


def checkpointed(config, i: int) -> bool:
    """Whether block i runs under activation checkpointing (``gradient_checkpointing``, limited
    to the first ``checkpoint_layers`` blocks when that is set: recompute only what memory needs)."""
    n = config.checkpoint_layers
    return bool(config.gradient_checkpointing) and (n is None or i < n)


def lm_output(lm_head: nn.Module, h: Tensor, labels: Optional[Tensor], ignore_index: int = -100,
              num_logits_to_keep: int = 0, return_logits: bool = True) -> CausalLMOutput:
    """Logits of the final hidden states ``h [B, T, C]`` (the last n positions when
    num_logits_to_keep = n > 0) and, with labels (already-shifted targets), the float32 loss.
    With labels and return_logits=False the loss comes from ``linear_cross_entropy`` (chunks of
    tokens; the [B, T, V] logits never exist) and logits is None; inside torch.compile the
    plain path runs (inductor fuses it)."""
    if num_logits_to_keep:
        h = h[:, -num_logits_to_keep:]
    if labels is not None and not return_logits and not torch.compiler.is_compiling():
        return CausalLMOutput(linear_cross_entropy(h, lm_head.weight, labels, ignore_index), None)
    logits = lm_head(h)  # [B, T, V]
    loss = None
    if labels is not None:
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=ignore_index)
    return CausalLMOutput(loss, logits)


class TransNormerLLM(nn.Module):
    """The TNL causal language model.

    Example:
        >>> model = TransNormerLLM(TNLConfig.from_preset("wikitext-45M"))
        >>> out = model(ids, labels=targets)      # ids, targets [B, T]; out.loss, out.logits [B, T, V]
        >>> tokens = model.generate([[464, 3290]], max_new_tokens=20)
    """

    def __init__(self, config: TNLConfig):
        super().__init__()
        self.config = config
        C, L = config.d_model, config.n_layers
        self.embed = nn.Embedding(config.vocab_size, C)
        self.blocks = nn.ModuleList(
            TNLBlock(C, config.n_heads, config.glu_dim, layer_idx=i, num_layers=L,
                     use_lrpe=config.lrpe_first_layer and i == 0, slope_kind=config.slope_kind,
                     norm_eps=config.norm_eps, dropout=config.dropout)
            for i in range(L))
        self.norm = SRMSNorm(config.norm_eps)
        self.lm_head = nn.Linear(C, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.embed.weight
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        # LRPE's theta keeps its own init (LRPE.reset_parameters)

    # ------------------------------------------------------------------------- forward

    def forward_features(self, input_ids: Tensor, cache: Optional[TNLCache] = None,
                         position_offset: Union[int, Tensor] = 0, cu_seqlens: Optional[Tensor] = None) -> Tensor:
        """Final-normed hidden states ``[B, T, C]``; see ``forward`` for the arguments."""
        B, T = input_ids.shape
        if cu_seqlens is not None and B != 1:
            raise ValueError(f"TransNormerLLM: with cu_seqlens the batch must be packed into B == 1, got B = {B}.")
        if cache is not None:
            if cache.offset is None:  # first call: the cache starts at position_offset
                n = cu_seqlens.shape[0] - 1 if cu_seqlens is not None else B
                cache.offset = torch.as_tensor(position_offset, dtype=torch.long, device=input_ids.device).expand(n).clone()
            position_offset = cache.batch_offset()  # LongTensor [N], one per sequence
        positions = make_positions(T, position_offset, cu_seqlens, device=input_ids.device)  # [B or 1, T]
        x = self.embed(input_ids) * math.sqrt(self.config.d_model)  # [B, T, C]
        x = F.dropout(x, self.config.dropout, self.training)
        for i, block in enumerate(self.blocks):
            if checkpointed(self.config, i) and self.training and cache is None:
                x = checkpoint(block, x, positions, cu_seqlens, None, use_reentrant=False)
            else:
                x = block(x, positions, cu_seqlens, cache)
        if cache is not None:
            cache.advance(cu_seqlens.diff().long() if cu_seqlens is not None else T)
        return self.norm(x)

    def forward(self, input_ids: Tensor, labels: Optional[Tensor] = None, cache: Optional[TNLCache] = None,
                position_offset: Union[int, Tensor] = 0, cu_seqlens: Optional[Tensor] = None,
                ignore_index: int = -100, num_logits_to_keep: int = 0, return_logits: bool = True) -> CausalLMOutput:
        """Logits and (with labels) the loss.

        Args:
            input_ids: LongTensor ``[B, T]``.
            labels: LongTensor ``[B, T]``, the *targets*: ``labels[b, t]`` is the token that should
                follow ``input_ids[b, t]`` (already shifted, nanoGPT style, so a sequence-parallel
                rank holds its own chunk of inputs and targets); ``ignore_index`` entries don't count.
            cache: a ``TNLCache``: states are read and replaced (decode op when T == 1), and the
                per-sequence offsets give the positions (then ``position_offset`` is ignored).
            position_offset: int or LongTensor ``[B]``, position of the first token (LRPE).
            cu_seqlens: ``[N + 1]`` offsets of N documents packed in ``B == 1``: positions restart
                and the attention state resets at each document start.
            num_logits_to_keep: compute logits for the last n positions only (0: all).
            return_logits: False (with labels): the loss only, by ``linear_cross_entropy``, without
                the [B, T, V] logits in memory (13 GB of bf16 logits at 128K tokens); logits is None.

        Returns:
            ``CausalLMOutput(loss, logits)``; logits ``[B, T, V]`` (float32 loss).
        """
        h = self.forward_features(input_ids, cache, position_offset, cu_seqlens)  # [B, T, C]
        return lm_output(self.lm_head, h, labels, ignore_index, num_logits_to_keep, return_logits)

    # ------------------------------------------------------------------------- utilities

    def reset_buffers(self) -> None:
        """Recompute the non-persistent buffers (the decay slopes), e.g. after ``to_empty`` from meta."""
        for block in self.blocks:
            block.token_mixer.reset_slope()

    def set_sequence_parallel(self, group) -> None:
        """Run every layer's attention sequence-parallel over ``group`` (None: back to local)."""
        for block in self.blocks:
            block.token_mixer.sp_group = group

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once); non_embedding leaves out the token embedding."""
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied weight once
        if non_embedding:
            n -= self.embed.weight.numel()
        return n

    def param_groups(self, weight_decay: float) -> List[Dict]:
        """AdamW groups: decay on matrices (and the embedding), none on LRPE's theta."""
        decay, no_decay = [], []
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if p.dim() < 2 or name.endswith("theta") else decay).append(p)
        return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]

    def new_cache(self, num_slots: Optional[int] = None) -> TNLCache:
        """An empty recurrent cache, or with ``num_slots`` a state pool of that many sequences
        on the model's device, float32 (float64 for a float64 model) like the ops' states
        (``TNLCache.pool``: serving with requests that come and go)."""
        if num_slots is None:
            return TNLCache(self.config.n_layers)
        shapes = []
        for block in self.blocks:
            tm = block.token_mixer
            dk = tm.head_dim * (2 if tm.lrpe is not None else 1)  # LRPE-d doubles q and k
            shapes.append((tm.num_heads, dk, tm.head_dim))
        w = self.embed.weight
        return TNLCache.pool(num_slots, shapes, device=w.device,
                             dtype=torch.float64 if w.dtype == torch.float64 else torch.float32)

    @torch.no_grad()
    def generate(self, prompts, max_new_tokens: int, **kwargs):
        """Sample continuations; see ``lightning_attn.generation.generate`` for the options."""
        from .generation import generate
        return generate(self, prompts, max_new_tokens, **kwargs)
