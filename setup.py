"""Builds lightning_attn._C: the C++ ops always, the CUDA kernels where nvcc and a CUDA torch exist.

Environment:
  LIGHTNING_ATTN_FORCE_CPU=1   build without CUDA even where it is available.
  LIGHTNING_ATTN_CUDA_ARCHS    gencode list, default "80;86;89+PTX;90a": the portable mma.sync kernels
                               for A100/A10/L4/RTX 4090 (sm_80/86/89), and those plus the Hopper
                               wgmma kernels for H100/H200 (sm_90a); e.g. "90a" for a faster build.
                               "+PTX" also embeds that target's PTX, which the driver compiles at
                               first use on newer GPUs (Blackwell: sm_100, sm_120), where the
                               portable kernels then run.
  MAX_JOBS                     parallel compile jobs (ninja).

The version and the distribution name come from lightning_attn/_version.py, read as text.
The wheel holds the package and its extension only: the bundled text and tokenizer files
(data/) ship in the sdist (MANIFEST.in) for the tests and examples.
"""
import ast
import glob
import os

from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

import torch

ROOT = os.path.dirname(os.path.abspath(__file__))
DEFAULT_CUDA_ARCHS = "80;86;89+PTX;90a"


def package_info() -> dict:
    """The constants of lightning_attn/_version.py (``__version__``, ``DISTRIBUTION``), without
    importing the package."""
    with open(os.path.join(ROOT, "lightning_attn", "_version.py"), encoding="utf-8") as f:
        tree = ast.parse(f.read())
    return {t.id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)
            for t in node.targets if isinstance(t, ast.Name)}


def use_cuda() -> bool:
    if os.environ.get("LIGHTNING_ATTN_FORCE_CPU", "0") == "1":
        return False
    return torch.version.cuda is not None and CUDA_HOME is not None


def cuda_archs() -> list:
    return [a for a in os.environ.get("LIGHTNING_ATTN_CUDA_ARCHS", DEFAULT_CUDA_ARCHS).replace(",", ";").split(";") if a]


def gencode_flags() -> list:
    """SASS for every target, and PTX for those suffixed "+PTX"; LIGHTNING_ATTN_BUILT_ARCHS: the
    targets, named in the error a GPU without a kernel it can run raises."""
    flags = []
    archs = cuda_archs()
    for a in archs:
        ptx = a.upper().endswith("+PTX")
        sm = a[:-4] if ptx else a
        flags.append(f"-gencode=arch=compute_{sm},code=sm_{sm}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{sm},code=compute_{sm}")
    return flags + [f"-DLIGHTNING_ATTN_BUILT_ARCHS={'_'.join(archs)}"]


def extension():
    rel = lambda pattern: sorted(os.path.relpath(p, ROOT)
                                 for p in glob.glob(os.path.join(ROOT, pattern), recursive=True))
    sources = rel("csrc/*.cpp") + rel("csrc/cpu/*.cpp") + rel("csrc/meta/*.cpp")
    # No -std here: torch's cpp_extension adds the standard torch itself was built with (C++20
    # since torch 2.11, C++17 before). An extension built to another standard than torch's own
    # headers crashed on the first exception it threw (torch 2.11, CUDA build).
    cxx = ["-O3", "-fopenmp"]
    if not use_cuda():
        return CppExtension("lightning_attn._C", sources, extra_compile_args={"cxx": cxx},
                            extra_link_args=["-fopenmp"])
    nvcc = ["-O3", "--use_fast_math", "--expt-relaxed-constexpr", "-lineinfo",
            *gencode_flags()]
    return CUDAExtension(
        "lightning_attn._C", sources + rel("csrc/cuda/**/*.cu"),
        extra_compile_args={"cxx": cxx, "nvcc": nvcc},
        extra_link_args=["-fopenmp"],
    )


INFO = package_info()
with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    README = f.read()

setup(
    name=INFO["DISTRIBUTION"],
    version=INFO["__version__"],
    description="Lightning Attention (linear attention with decay) as torch operators, and the TransNormerLLM model",
    long_description=README,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    packages=find_packages(include=["lightning_attn", "lightning_attn.*"]),
    ext_modules=[extension()],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    install_requires=["torch>=2.6", "tiktoken", "safetensors", "tqdm"],
    extras_require={"hf": ["transformers>=4.45"], "plot": ["matplotlib"], "test": ["pytest"]},
)
