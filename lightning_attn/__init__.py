"""lightning_attn: Lightning Attention as torch operators, and the TransNormerLLM model.

Ops (ops.py): lightning_attn_func, lightning_attn_decode, lightning_attn_decode_tokens, srms_norm; lightning_attn_prefill (prefill.py); decay schedules (decay.py);
nn modules (modules.py), the TNL model (model.py), its recurrent cache (cache.py) and
generation (generation.py), the chunked linear + cross-entropy loss (loss.py). On demand: lightning_attn.distributed (sequence/data parallel),
lightning_attn.hf (transformers integration), lightning_attn.baseline (Transformer baseline).
"""
from pathlib import Path as _Path

from ._dist_check import check_single_owner as _check_single_owner
from ._version import __version__

# First, so that another distribution's files mixed into this folder fail with a clear message.
_check_single_owner(_Path(__file__).parent)

from .cache import TNLCache  # noqa: E402
from .decay import tnl_slopes
from .generation import generate
from .kernel_options import KernelOptions, current_kernel_options, kernel_options, set_kernel_options
from .loss import linear_cross_entropy
from .model import TNLConfig, TransNormerLLM
from .modules import LRPE, SGLU, GatedLinearAttention, LightningAttention, SRMSNorm, TNLBlock
from .ops import lightning_attn_decode, lightning_attn_decode_tokens, lightning_attn_func, srms_norm
from .prefill import lightning_attn_prefill

__all__ = [
    "lightning_attn_func", "lightning_attn_decode", "lightning_attn_decode_tokens", "lightning_attn_prefill", "srms_norm", "tnl_slopes",
    "SRMSNorm", "LRPE", "GatedLinearAttention", "SGLU", "TNLBlock", "LightningAttention",
    "TNLCache", "TNLConfig", "TransNormerLLM", "generate", "linear_cross_entropy",
    "KernelOptions", "kernel_options", "set_kernel_options", "current_kernel_options",
]
