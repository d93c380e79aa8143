"""nn modules on top of the lightning_attn operators: TNL's layers and a drop-in attention.

Layers (FLA-style "layers" level; the ops live in ops.py, the model in model.py):

    SRMSNorm              y = x * rsqrt(mean(x^2) + eps), no gain
    LRPE                  LRPE-d: x -> [x cos(theta t), x sin(theta t)] (head dim doubles)
    GatedLinearAttention  TNL's token mixer (GLA)
    SGLU                  TNL's channel mixer: (x W_v * x W_u) W_o
    TNLBlock              x += GLA(SRMSNorm(x)); x += SGLU(SRMSNorm(x))
    LightningAttention    causal drop-in for nn.MultiheadAttention (same constructor and call)

Shapes: B batch, T time, C = d_model, H heads, D = C // H head dim. Inside, one layout
[B, T, H, D]. Nothing here keeps per-sequence state: positions and recurrent states come in
as arguments (see cache.py).
"""
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .decay import tnl_slopes
from .ops import lightning_attn_decode, lightning_attn_func, srms_norm

__all__ = ["SRMSNorm", "LRPE", "GatedLinearAttention", "SGLU", "TNLBlock", "LightningAttention",
           "make_positions"]


# ----------------------------------------------------------------------------- helpers


def make_positions(T: int, position_offset: Union[int, Tensor] = 0, cu_seqlens: Optional[Tensor] = None,
                   device=None) -> Tensor:
    """Absolute positions of T tokens, LongTensor ``[B or 1, T]``.

    position_offset: int, or LongTensor ``[B]`` (one offset per sequence), or with cu_seqlens
    LongTensor ``[N]`` (one per packed sequence). With cu_seqlens (packed, B == 1) the positions
    restart at each sequence start. An int offset then places these T tokens at global index
    ``g = offset + t`` of the packed batch (a sequence-parallel rank's piece), and
    ``pos[t] = g - cu_seqlens[seq(g)]``; a tensor offset adds ``offset[seq(t)]`` (a cache).
    """
    t = torch.arange(T, device=device)
    if cu_seqlens is not None:
        g = t if isinstance(position_offset, Tensor) else t + position_offset  # global packed index
        seq = torch.searchsorted(cu_seqlens[1:].to(t.dtype), g, right=True)  # [T], which sequence
        pos = g - cu_seqlens.to(t.dtype)[seq]
        if isinstance(position_offset, Tensor):
            pos = pos + position_offset.to(device=pos.device, dtype=pos.dtype)[seq]
        return pos[None]  # [1, T]
    if isinstance(position_offset, Tensor):
        return position_offset.to(device=t.device, dtype=t.dtype).view(-1, 1) + t  # [B, T]
    return (t + position_offset)[None]  # [1, T]


# ----------------------------------------------------------------------------- norms, positions


class SRMSNorm(nn.Module):
    """Simple RMSNorm (TNL): ``y = x * rsqrt(mean(x^2, -1) + eps)``, no learned gain. x: ``[..., C]``."""

    def __init__(self, eps: float = 1e-6):
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return srms_norm(x, self.eps)

    def extra_repr(self) -> str:
        return f"eps={self.eps}"


class LRPE(nn.Module):
    """LRPE-d (linearized relative positional encoding, TNL's first layer).

    ``x [B, T, H, D] -> [x * cos(theta t), x * sin(theta t)]  [B, T, H, 2D]``, so that
    ``<lrpe(q)_t, lrpe(k)_s> = sum_i q_i k_i cos(theta_i (t - s))`` depends on t - s only.
    theta ``[H, D]`` is learnable, initialised to ``10000^(-2 i / (H D))`` for i = 0 .. H*D-1.
    """

    def __init__(self, num_heads: int, head_dim: int, base: float = 10000.0):
        super().__init__()
        self.num_heads, self.head_dim, self.base = num_heads, head_dim, base
        self.theta = nn.Parameter(torch.empty(num_heads, head_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self):
        n = self.num_heads * self.head_dim
        i = torch.arange(n, dtype=torch.float32, device=self.theta.device)
        self.theta.copy_((self.base ** (-2.0 * i / n)).view(self.num_heads, self.head_dim))

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """x ``[B, T, H, D]``, positions LongTensor ``[B or 1, T]`` -> ``[B, T, H, 2D]`` in x's dtype."""
        angle = positions[:, :, None, None].float() * self.theta.float()  # [B, T, H, D], float32
        return torch.cat([x * angle.cos().to(x.dtype), x * angle.sin().to(x.dtype)], dim=-1)


# ----------------------------------------------------------------------------- TNL layers


class GatedLinearAttention(nn.Module):
    """TNL's token mixer (GLA).

    ``[q, k, v, u] = x W_qkvu; q, k = SiLU(q), SiLU(k); (LRPE on q, k in the first layer);
    o = SRMSNorm(lightning(q, k, v; lambda = exp(-slope))) over C; out = (u * o) W_o``.

    Args:
        d_model: C. num_heads: H (D = C // H; with LRPE q and k have 2D).
        layer_idx, num_layers: pick the layer's decay slopes (``tnl_slopes``).
        use_lrpe: LRPE-d on q and k (TNL: first layer only).
        slope_kind: "released" (default) or "paper", see ``tnl_slopes``.

    The slopes are a non-persistent buffer (no gradient, not in the state dict).
    ``sp_group``: a torch.distributed group for sequence parallelism (set by
    ``TransNormerLLM.set_sequence_parallel``); None runs the local op.
    """

    def __init__(self, d_model: int, num_heads: int, layer_idx: int = 0, num_layers: int = 1,
                 use_lrpe: bool = False, slope_kind: str = "released", norm_eps: float = 1e-6):
        super().__init__()
        if d_model % num_heads:
            raise ValueError(f"GatedLinearAttention: d_model ({d_model}) must be divisible by num_heads ({num_heads}).")
        self.d_model, self.num_heads, self.head_dim = d_model, num_heads, d_model // num_heads
        self.layer_idx, self.num_layers, self.slope_kind, self.norm_eps = layer_idx, num_layers, slope_kind, norm_eps
        self.qkvu_proj = nn.Linear(d_model, 4 * d_model, bias=False)
        self.out_proj = nn.Linear(d_model, d_model, bias=False)
        self.lrpe = LRPE(num_heads, self.head_dim) if use_lrpe else None
        self.register_buffer("slope", tnl_slopes(num_heads, layer_idx, num_layers, kind=slope_kind),
                             persistent=False)
        self.sp_group = None

    @torch.no_grad()
    def reset_slope(self):
        """Recompute the slope buffer (e.g. after materialising from the meta device)."""
        slope = tnl_slopes(self.num_heads, self.layer_idx, self.num_layers, kind=self.slope_kind)
        self.slope = slope.to(self.qkvu_proj.weight.device)

    def _apply(self, fn, recurse=True):
        # .to(bfloat16) / .half() / to_empty() must not touch the slopes: float32, exact, on the weights' device
        super()._apply(fn, recurse)
        self.reset_slope()
        return self

    def forward(self, x: Tensor, positions: Tensor, cu_seqlens: Optional[Tensor] = None, cache=None) -> Tensor:
        """x ``[B, T, C]``, positions ``[B or 1, T]`` -> ``[B, T, C]``.

        cache: a ``TNLCache``; it runs this layer's attention from and into its state for the
        layer (``TNLCache.attend``: decode step, prefill, pool rows or speculation).
        """
        B, T, C = x.shape
        H, D = self.num_heads, self.head_dim
        q, k, v, u = self.qkvu_proj(x).chunk(4, dim=-1)  # 4 x [B, T, C]
        q = F.silu(q).view(B, T, H, D)
        k = F.silu(k).view(B, T, H, D)
        v = v.view(B, T, H, D)
        if self.lrpe is not None:
            q, k = self.lrpe(q, positions), self.lrpe(k, positions)  # [B, T, H, 2D]
        if cache is not None:
            o = cache.attend(self.layer_idx, q, k, v, self.slope, cu_seqlens)
        elif self.sp_group is not None:
            from .distributed import sequence_parallel_attn
            o, _ = sequence_parallel_attn(q, k, v, slope=self.slope, scale=1.0, group=self.sp_group,
                                          cu_seqlens=cu_seqlens)
        else:
            o, _ = lightning_attn_func(q, k, v, slope=self.slope, scale=1.0, cu_seqlens=cu_seqlens)
        o = srms_norm(o.reshape(B, T, C), self.norm_eps)  # norm over the full hidden size
        return self.out_proj(u * o)

class SGLU(nn.Module):
    """TNL's channel mixer, a GLU without activation: ``(x W_v * x W_u) W_o``. x ``[..., C]``.

    W_v and W_u are one ``vu_proj`` weight ``[2 G, C]`` (rows of W_v, then of W_u): one GEMM
    instead of two, which at decode batch sizes is one launch less per layer for the same
    weight bytes. A state dict with separate ``v_proj.weight`` and ``u_proj.weight`` loads too.
    """

    def __init__(self, d_model: int, glu_dim: int):
        super().__init__()
        self.vu_proj = nn.Linear(d_model, 2 * glu_dim, bias=False)
        self.o_proj = nn.Linear(glu_dim, d_model, bias=False)
        self._register_load_state_dict_pre_hook(self._join_vu)

    @staticmethod
    def _join_vu(state_dict, prefix, *args):
        v, u = prefix + "v_proj.weight", prefix + "u_proj.weight"
        if v in state_dict and u in state_dict:
            state_dict[prefix + "vu_proj.weight"] = torch.cat([state_dict.pop(v), state_dict.pop(u)])

    def forward(self, x: Tensor) -> Tensor:
        v, u = self.vu_proj(x).chunk(2, dim=-1)
        return self.o_proj(v * u)


class TNLBlock(nn.Module):
    """Pre-norm TNL block: ``x += GLA(SRMSNorm(x)); x += SGLU(SRMSNorm(x))``. x ``[B, T, C]``."""

    def __init__(self, d_model: int, num_heads: int, glu_dim: int, layer_idx: int, num_layers: int,
                 use_lrpe: bool = False, slope_kind: str = "released", norm_eps: float = 1e-6, dropout: float = 0.0):
        super().__init__()
        self.dropout = dropout  # on each residual branch (training only)
        self.token_norm = SRMSNorm(norm_eps)
        self.token_mixer = GatedLinearAttention(d_model, num_heads, layer_idx, num_layers, use_lrpe,
                                                slope_kind, norm_eps)
        self.channel_norm = SRMSNorm(norm_eps)
        self.channel_mixer = SGLU(d_model, glu_dim)

    def forward(self, x: Tensor, positions: Tensor, cu_seqlens: Optional[Tensor] = None, cache=None) -> Tensor:
        x = x + F.dropout(self.token_mixer(self.token_norm(x), positions, cu_seqlens, cache), self.dropout, self.training)
        x = x + F.dropout(self.channel_mixer(self.channel_norm(x)), self.dropout, self.training)
        return x


# ----------------------------------------------------------------------------- drop-in attention


def _is_causal_mask(mask: Tensor, T: int) -> bool:
    """True when an nn.MultiheadAttention attn_mask ``[T, T]`` masks exactly the future."""
    if mask.shape[-2:] != (T, T):
        return False
    future = torch.ones(T, T, dtype=torch.bool, device=mask.device).triu(1)
    blocked = mask if mask.dtype == torch.bool else torch.isneginf(mask)
    if mask.dtype != torch.bool and bool((mask[~future] != 0).any()):
        return False
    return bool((blocked == future).all())


class LightningAttention(nn.Module):
    """Causal lightning attention with nn.MultiheadAttention's constructor and call.

    Swap ``nn.MultiheadAttention(E, H, batch_first=True)`` for ``LightningAttention(E, H,
    batch_first=True)``; the call ``attn(x, x, x, need_weights=False, is_causal=True)`` is the same.
    Per head, with lambda = exp(-slope):
    ``q, k = SiLU(x W_q + b_q), SiLU(x W_k + b_k); v = x W_v + b_v;
    o_t = scale * sum_{s<=t} lambda^(t-s) (q_t.k_s) v_s; out = SRMSNorm(o) W_o + b_o``
    (the SiLU feature map and the output norm stand in for softmax's normalisation; turn them
    off with ``feature_map=None, output_norm=False``).

    Args (as nn.MultiheadAttention): embed_dim, num_heads, dropout (applied to o before the
    output projection; there are no attention weights), bias, kdim, vdim, batch_first,
    device, dtype. add_bias_kv / add_zero_attn are not supported.
    Extra: slope (float32 ``[H]``, "released"/"paper" for TNL's slopes of layer
    ``layer_idx`` of ``num_layers``, or None for no decay), scale (default 1.0).

    Call: ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=True) -> (out, None)``; query/key/value
    ``[B, T, E]`` (batch_first) or ``[T, B, E]``; always causal self-attention over T (key and
    value must have query's length); attn_mask may be given only as the causal mask;
    key_padding_mask ``[B, T]`` (True = pad) zeroes those keys and values.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: Optional[int] = None,
                 vdim: Optional[int] = None, batch_first: bool = False, device=None, dtype=None, *,
                 slope: Union[str, Tensor, None] = "released", layer_idx: int = 0, num_layers: int = 1,
                 scale: float = 1.0, feature_map: Optional[str] = "silu", output_norm: bool = True,
                 norm_eps: float = 1e-6):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"LightningAttention: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}).")
        if add_bias_kv or add_zero_attn:
            raise ValueError("LightningAttention: add_bias_kv and add_zero_attn are not supported "
                             "(there is no softmax to attend to extra keys).")
        if feature_map not in (None, "silu", "elu1"):
            raise ValueError(f"LightningAttention: feature_map must be 'silu', 'elu1' or None, got {feature_map!r}.")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.head_dim = embed_dim, num_heads, embed_dim // num_heads
        self.kdim, self.vdim = kdim or embed_dim, vdim or embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.batch_first, self.dropout, self.scale = batch_first, dropout, scale
        self.feature_map, self.output_norm, self.norm_eps = feature_map, output_norm, norm_eps
        if self._qkv_same_embed_dim:
            self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = nn.Parameter(torch.empty(embed_dim, embed_dim, **factory))
            self.k_proj_weight = nn.Parameter(torch.empty(embed_dim, self.kdim, **factory))
            self.v_proj_weight = nn.Parameter(torch.empty(embed_dim, self.vdim, **factory))
            self.register_parameter("in_proj_weight", None)
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        if isinstance(slope, str):
            slope = tnl_slopes(num_heads, layer_idx, num_layers, kind=slope)
        if slope is not None:
            slope = torch.as_tensor(slope, dtype=torch.float32, device=device)
            if slope.shape != (num_heads,):
                raise ValueError(f"LightningAttention: slope must have shape [{num_heads}], got {tuple(slope.shape)}.")
        self.register_buffer("slope", slope, persistent=False)
        self._slope_values = None if slope is None else slope.detach().cpu().clone()  # float32 master copy
        self._reset_parameters()

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)  # keep the slopes float32 whatever dtype the module is cast to
        if self._slope_values is not None:
            self.slope = self._slope_values.to(self.out_proj.weight.device)
        return self

    def _reset_parameters(self):
        for w in (self.in_proj_weight, self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
            if w is not None:
                nn.init.xavier_uniform_(w)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _project(self, query: Tensor, key: Tensor, value: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        E = self.embed_dim
        if self._qkv_same_embed_dim:
            wq, wk, wv = self.in_proj_weight.chunk(3)
        else:
            wq, wk, wv = self.q_proj_weight, self.k_proj_weight, self.v_proj_weight
        bq, bk, bv = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        if self._qkv_same_embed_dim and query is key and key is value:
            return F.linear(query, self.in_proj_weight, self.in_proj_bias).split(E, dim=-1)  # self-attention
        return F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(value, wv, bv)

    def forward(self, query: Tensor, key: Optional[Tensor] = None, value: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None, need_weights: bool = True,
                attn_mask: Optional[Tensor] = None, average_attn_weights: bool = True,
                is_causal: bool = True) -> Tuple[Tensor, None]:
        key = query if key is None else key
        value = key if value is None else value
        if not self.batch_first:  # [T, B, E] -> [B, T, E]
            query, key, value = (x.transpose(0, 1) for x in (query, key, value))
        B, T, _ = query.shape
        if key.shape[1] != T or value.shape[1] != T:
            raise ValueError(f"LightningAttention is causal self-attention: key and value must have the query's "
                             f"length {T}, got {key.shape[1]} and {value.shape[1]}.")
        if attn_mask is not None and not _is_causal_mask(attn_mask, T):
            raise ValueError("LightningAttention is always causal: attn_mask may only be the causal mask "
                             "(e.g. nn.Transformer.generate_square_subsequent_mask(T)); pass None.")
        if attn_mask is None and not is_causal:
            raise ValueError("LightningAttention is always causal; is_causal=False without a mask is not supported.")
        H, D = self.num_heads, self.head_dim
        q, k, v = self._project(query, key, value)  # 3 x [B, T, E]
        if self.feature_map == "silu":
            q, k = F.silu(q), F.silu(k)
        elif self.feature_map == "elu1":
            q, k = F.elu(q) + 1, F.elu(k) + 1
        if key_padding_mask is not None:
            keep = (~key_padding_mask.bool() if key_padding_mask.dtype == torch.bool
                    else ~torch.isneginf(key_padding_mask)).to(k.dtype)[:, :, None]  # [B, T, 1]
            k, v = k * keep, v * keep
        o, _ = lightning_attn_func(q.reshape(B, T, H, D), k.reshape(B, T, H, D), v.reshape(B, T, H, D),
                                   slope=self.slope, scale=self.scale)
        o = o.reshape(B, T, self.embed_dim)
        if self.output_norm:
            o = srms_norm(o, self.norm_eps)
        o = F.dropout(o, self.dropout, self.training)
        out = self.out_proj(o)
        if not self.batch_first:
            out = out.transpose(0, 1)
        return out, None
