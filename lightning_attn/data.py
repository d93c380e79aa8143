"""Bundled text, the GPT-2 BPE tokenizer (tiktoken, from bundled files) and token-block datasets.

Files (see data/README.md for sources and licenses) live in ``<repo>/data`` or in the folder
named by the environment variable ``LIGHTNING_ATTN_DATA``:

    data/wikitext-103/wiki.train.head.tokens   train (first 2.75 MiB of WikiText-103 train)
    data/wikitext-103/wiki.valid.tokens        validation (never trained on)
    data/wikitext-103/wiki.test.tokens         test (never trained on)
    data/gpt2/vocab.bpe, data/gpt2/encoder.json  GPT-2 BPE

Batches are a pure function of (seed, step): ``TokenBlocks.batch(step)`` — so a checkpoint only
needs the step to resume the data stream exactly.
"""
import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

__all__ = ["data_dir", "get_tokenizer", "load_tokens", "TokenBlocks", "eval_blocks", "EOT_TOKEN", "GPT2_VOCAB"]

EOT_TOKEN = 50256  # <|endoftext|>
GPT2_VOCAB = 50257
# GPT-2's pre-tokenisation pattern (tiktoken's r50k/gpt2 pattern)
_GPT2_PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""


def data_dir() -> Path:
    """The folder with wikitext-103/ and gpt2/: $LIGHTNING_ATTN_DATA, else <repo>/data."""
    env = os.environ.get("LIGHTNING_ATTN_DATA")
    path = Path(env) if env else Path(__file__).resolve().parent.parent / "data"
    if not (path / "gpt2" / "vocab.bpe").exists():
        raise FileNotFoundError(f"lightning_attn data folder not found at {path} (expected gpt2/vocab.bpe there); "
                                "set LIGHTNING_ATTN_DATA to the folder holding wikitext-103/ and gpt2/.")
    return path


@lru_cache(maxsize=None)
def get_tokenizer():
    """GPT-2's byte-level BPE as a ``tiktoken.Encoding``, built from the bundled files (no download).

    Example:
        >>> enc = get_tokenizer(); enc.encode("Hello world")  # [15496, 995]
    """
    import tiktoken
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    d = data_dir() / "gpt2"
    ranks = data_gym_to_mergeable_bpe_ranks(str(d / "vocab.bpe"), str(d / "encoder.json"))
    try:
        from tiktoken_ext.openai_public import r50k_pat_str as pat
    except ImportError:  # older/newer tiktoken layouts
        pat = _GPT2_PAT
    return tiktoken.Encoding(name="gpt2-bundled", pat_str=pat, mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": EOT_TOKEN}, explicit_n_vocab=GPT2_VOCAB)


def _cache_dir() -> Path:
    path = Path(os.environ.get("LIGHTNING_ATTN_CACHE", Path.home() / ".cache" / "lightning_attn"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_tokens(paths: Union[str, Path, Sequence[Union[str, Path]]], cache: bool = True) -> np.ndarray:
    """Tokenise text files with the GPT-2 BPE, uint16 ``[n_tokens]`` (files joined by <|endoftext|>).

    Relative names are looked up under ``data_dir()`` too (e.g. "wikitext-103/wiki.valid.tokens").
    Token arrays are cached in ~/.cache/lightning_attn (or $LIGHTNING_ATTN_CACHE), keyed by content.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    parts = []
    for p in paths:
        p = Path(p)
        if not p.exists() and not p.is_absolute() and (data_dir() / p).exists():
            p = data_dir() / p
        raw = p.read_bytes()
        key = hashlib.sha1(raw).hexdigest()[:16]
        cached = _cache_dir() / f"{p.name}.{key}.gpt2.npy"
        if cache and cached.exists():
            ids = np.load(cached)
        else:
            ids = np.array(get_tokenizer().encode_ordinary(raw.decode("utf-8")), dtype=np.uint16)
            if cache:
                tmp = cached.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, ids)
                os.replace(tmp, cached)
        parts.append(ids)
        parts.append(np.array([EOT_TOKEN], dtype=np.uint16))
    return np.concatenate(parts[:-1])


class TokenBlocks:
    """Training batches of ``seq_len + 1``-token blocks cut from a token array.

    The array is cut into non-overlapping blocks; each epoch visits them in a fresh random order
    (seeded by ``seed`` and the epoch). ``batch(step)`` returns ``(inputs, targets)`` LongTensors
    ``[batch_size, seq_len]``, a pure function of step: resuming at a step resumes the data exactly.
    ``offset`` (0 .. seq_len) shifts the cut so a second run can see other boundaries.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0, offset: int = 0,
                 rank: int = 0, world_size: int = 1):
        self.tokens = torch.from_numpy(tokens.astype(np.int64))
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.rank, self.world_size = rank, world_size  # data-parallel ranks take disjoint rows
        n_blocks = (len(tokens) - 1 - offset) // seq_len
        if n_blocks < 1:
            raise ValueError(f"TokenBlocks: {len(tokens)} tokens are too few for one block of {seq_len + 1}.")
        self.starts = offset + torch.arange(n_blocks) * seq_len  # [n_blocks]
        self._perm_epoch, self._perm = -1, None

    @property
    def num_blocks(self) -> int:
        return len(self.starts)

    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len * self.world_size

    def _order(self, epoch: int) -> Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.num_blocks, generator=g), epoch
        return self._perm

    def block_indices(self, step: int) -> List[int]:
        """Indices of the blocks of this rank's rows at ``step``."""
        rows = self.batch_size * self.world_size
        first = step * rows + self.rank * self.batch_size
        out = []
        for i in range(first, first + self.batch_size):
            epoch, j = divmod(i, self.num_blocks)
            out.append(int(self._order(epoch)[j]))
        return out

    def epoch_at(self, step: int) -> float:
        return step * self.batch_size * self.world_size / self.num_blocks

    def batch(self, step: int) -> Tuple[Tensor, Tensor]:
        idx = torch.tensor(self.block_indices(step))
        pos = self.starts[idx][:, None] + torch.arange(self.seq_len + 1)  # [B, seq_len + 1]
        block = self.tokens[pos]
        return block[:, :-1], block[:, 1:]  # inputs, targets [B, seq_len]


def eval_blocks(tokens: np.ndarray, seq_len: int, batch_size: int, max_tokens: Optional[int] = None
                ) -> Iterator[Tuple[Tensor, Tensor]]:
    """Non-overlapping evaluation batches ``(inputs, targets)`` over the first ``max_tokens`` tokens."""
    t = torch.from_numpy(tokens.astype(np.int64))
    if max_tokens is not None:
        t = t[: max_tokens + 1]
    n = (len(t) - 1) // seq_len
    blocks = torch.stack([t[i * seq_len: i * seq_len + seq_len + 1] for i in range(n)])  # [n, seq_len + 1]
    for i in range(0, n, batch_size):
        b = blocks[i: i + batch_size]
        yield b[:, :-1], b[:, 1:]
