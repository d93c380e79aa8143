"""lightning_attn: Lightning Attention as torch operators, and the TransNormerLLM model."""
from .decay import tnl_slopes
from .ops import lightning_attn_decode, lightning_attn_func, srms_norm

__all__ = ["lightning_attn_func", "lightning_attn_decode", "srms_norm", "tnl_slopes"]
__version__ = "0.1.0"

# nn modules, the TNL model, its cache and generation (transformers integration: lightning_attn.hf, imported on demand)
from .modules import LRPE, SGLU, GatedLinearAttention, LightningAttention, SRMSNorm, TNLBlock  # noqa: E402
from .cache import TNLCache  # noqa: E402
from .model import TNLConfig, TransNormerLLM  # noqa: E402
from .generation import generate  # noqa: E402

__all__ += ["SRMSNorm", "LRPE", "GatedLinearAttention", "SGLU", "TNLBlock", "LightningAttention", "TNLCache",
            "TNLConfig", "TransNormerLLM", "generate"]
