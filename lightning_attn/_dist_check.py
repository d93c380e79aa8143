"""Refuses to import beside another installed distribution that also provides ``lightning_attn``.

PyPI's ``lightning-attn`` (OpenNLPLab's Triton kernels) installs a top-level package of the same
name: installed into one environment, the two overwrite each other's files, or whichever comes
first on ``sys.path`` wins, and ``import lightning_attn`` gives a package other than the one
the user expects. Better a clear error at import than a wrong module later.

The look-up reads each distribution's ``top_level.txt``, or its ``RECORD`` where there is no
``top_level.txt`` (a few milliseconds for ~150 distributions; ``packages_distributions()`` parses
every RECORD into path objects and takes ~0.2-0.4 s).
"""
import importlib.metadata
import re
from pathlib import Path
from typing import List

from ._version import DISTRIBUTION

TOP_LEVEL = "lightning_attn"
_RECORD_ENTRY = re.compile(rf"^{TOP_LEVEL}(?:/|\.py,)", re.MULTILINE)


def _normalize(name: str) -> str:
    """PEP 503 normalisation: lightning_attn_ops, Lightning.Attn-Ops -> lightning-attn-ops."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _provides_top_level(dist) -> bool:
    top_level = dist.read_text("top_level.txt")
    if top_level is not None:
        return TOP_LEVEL in top_level.split()
    record = dist.read_text("RECORD")
    return record is not None and _RECORD_ENTRY.search(record) is not None


def _in_source_tree(dist, source_root) -> bool:
    """Metadata that setuptools wrote into the source tree this package is imported from
    (``<root>/*.egg-info`` from build, sdist or develop) describes that tree, whatever name
    it carries."""
    if source_root is None:
        return False
    try:
        return Path(dist.locate_file("")).resolve() == source_root
    except (NotImplementedError, OSError, TypeError):
        return False


def other_distributions(package_dir: Path) -> List[str]:
    """Names of installed distributions, other than this one, that provide ``lightning_attn``.

    package_dir: the folder of the imported ``lightning_attn`` (its parent is a source tree
    when ``setup.py`` sits there: in-place and editable builds).
    """
    root = package_dir.resolve().parent
    source_root = root if (root / "setup.py").is_file() else None
    ours = _normalize(DISTRIBUTION)
    found = set()
    for dist in importlib.metadata.distributions():
        name = dist.metadata["Name"] or "?"
        if _normalize(name) == ours or not _provides_top_level(dist) or _in_source_tree(dist, source_root):
            continue
        found.add(name)
    return sorted(found)


def check_single_owner(package_dir: Path) -> None:
    """Raises ImportError naming every other distribution that provides ``lightning_attn``."""
    others = other_distributions(package_dir)
    if others:
        names = ", ".join(others)
        raise ImportError(
            f"lightning_attn: the installed distribution(s) {names} also provide the top-level package "
            f"'{TOP_LEVEL}', which this project ({DISTRIBUTION}, imported from {package_dir}) provides too; "
            f"one overwrites or hides the other. Fix: `pip uninstall {' '.join(others)}` (then reinstall "
            f"{DISTRIBUTION} if its files were overwritten), or keep the two in separate virtual environments.")
