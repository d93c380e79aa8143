"""The package's version and its distribution name, in one place.

setup.py reads this file as text (it never imports the package, which needs the built
extension); ``lightning_attn.__version__`` imports it.
"""
__version__ = "0.1.0"

# The name pip knows this project by. The import name stays ``lightning_attn``; PyPI's
# ``lightning-attn`` is another project (OpenNLPLab's Triton kernels) with that import name.
DISTRIBUTION = "lightning-attn-ops"
