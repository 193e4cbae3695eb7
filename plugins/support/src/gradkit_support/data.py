"""Offline, seeded datasets for experiments: scikit-learn digits and a byte corpus
built from the Python standard library's own source files.  Nothing is downloaded."""

from __future__ import annotations

import random
import sysconfig
from functools import lru_cache
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset


def set_seed(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a torch.Generator seeded the same way."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


# ---------------------------------------------------------------------- digits
def digits(test_fraction: float = 0.25, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """scikit-learn's 8x8 digits as ``(x_train, y_train, x_test, y_test)``.

    Images are float32 ``(N, 1, 8, 8)`` scaled to ``[0, 1]``; labels int64.  The
    split is stratified and fixed by ``seed``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    y = d.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return torch.from_numpy(xtr), torch.from_numpy(ytr), torch.from_numpy(xte), torch.from_numpy(yte)


def loader(x: torch.Tensor, y: torch.Tensor, batch_size: int = 64, shuffle: bool = True, seed: int = 0,
           drop_last: bool = False) -> DataLoader:
    """A DataLoader over ``(x, y)`` whose shuffling order is fixed by ``seed``."""
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} rows but y has {len(y)}")
    g = torch.Generator()
    g.manual_seed(seed)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle, generator=g, drop_last=drop_last)


# ---------------------------------------------------------------------- stdlib corpus
def stdlib_files() -> List[Path]:
    """The standard library's ``.py`` files in a fixed order (no site-packages, no tests)."""
    return list(_stdlib_files())


@lru_cache(maxsize=1)
def _stdlib_files() -> tuple:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if rel and (rel[0] in ("site-packages", "dist-packages", "test", "idlelib", "lib2to3") or "tests" in rel):
            continue
        files.append(p)
    return tuple(files)


def stdlib_corpus(max_bytes: int = 1_000_000, seed: Optional[int] = None) -> bytes:
    """Concatenated standard-library source, at most ``max_bytes`` bytes.

    With ``seed=None`` files are taken in sorted path order; otherwise in an order
    shuffled by ``seed``.  Each file is prefixed by a ``# file: NAME`` line.
    """
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    files = stdlib_files()
    if seed is not None:
        random.Random(seed).shuffle(files)
    chunks, total = [], 0
    for p in files:
        try:
            data = p.read_bytes()
        except OSError:
            continue
        head = f"# file: {p.name}\n".encode()
        chunks.append(head + data + b"\n")
        total += len(chunks[-1])
        if total >= max_bytes:
            break
    return b"".join(chunks)[:max_bytes]


def byte_tensor(data: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8).long()


def split_corpus(data: bytes, val_fraction: float = 0.1) -> Tuple[torch.Tensor, torch.Tensor]:
    """Byte tensors ``(train, val)``: the last ``val_fraction`` of the corpus is validation."""
    t = byte_tensor(data)
    n_val = int(len(t) * val_fraction)
    if n_val < 2 or len(t) - n_val < 2:
        raise ValueError(f"corpus of {len(t)} bytes is too small for val_fraction={val_fraction}")
    return t[:-n_val], t[-n_val:]


def lm_batch(tokens: torch.Tensor, block_size: int, batch_size: int, generator: torch.Generator
             ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Random contiguous windows ``(x, y)`` with ``y`` shifted by one token."""
    if len(tokens) <= block_size + 1:
        raise ValueError(f"need more than block_size+1={block_size + 1} tokens, got {len(tokens)}")
    ix = torch.randint(len(tokens) - block_size - 1, (batch_size,), generator=generator)
    x = torch.stack([tokens[i : i + block_size] for i in ix.tolist()])
    y = torch.stack([tokens[i + 1 : i + 1 + block_size] for i in ix.tolist()])
    return x, y


def lm_batches(tokens: torch.Tensor, block_size: int, batch_size: int, seed: int = 0) -> Iterator[Tuple[torch.Tensor, torch.Tensor]]:
    """Endless seeded stream of language-model batches."""
    g = torch.Generator()
    g.manual_seed(seed)
    while True:
        yield lm_batch(tokens, block_size, batch_size, g)
