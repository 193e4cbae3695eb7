"""Offline corpora for the recoding reproduction: a garden-path PCFG and word-level stdlib text.

Garden-path PCFG (reduced relatives, "the horse raced past the barn fell"):

    S   → NP_s VP_main .                         (main-verb reading,        p_mv)
        | NP_s Vamb-ed PP VP_main .  with a reduced relative, ambiguous verb (p_rr)
        | NP_s that was Vamb-ed PP VP_main .  unambiguous relative          (1 − p_mv − p_rr)
    VP_main → Vamb-ed PP | Vint
    NP  → the N | the Adj N ;  PP → P NP | P NP PP (p 0.2)

In a reduced-relative sentence the token after the PP (the main verb ``Vint``) is the disambiguation
point: up to there the prefix is also a complete main-verb sentence, so the LM's surprisal at that token
measures the garden-path effect.  The generator returns the positions of the disambiguation tokens.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from functools import lru_cache
from typing import Dict, List, Tuple

import torch

NOUNS = ["horse", "dog", "child", "man", "woman", "student", "boat", "car", "bird", "cat", "farmer", "soldier"]
ADJS = ["old", "small", "red", "quick", "tired", "young"]
PREPS = ["past", "near", "by", "behind", "under", "across"]
V_AMB = ["raced", "walked", "floated", "pushed", "sailed", "rolled", "led", "sent"]  # past = participle
V_INT = ["fell", "slept", "stopped", "cried", "left", "died", "smiled", "waited"]


def _np(rng: random.Random) -> List[str]:
    return ["the", rng.choice(ADJS), rng.choice(NOUNS)] if rng.random() < 0.3 else ["the", rng.choice(NOUNS)]


def _pp(rng: random.Random) -> List[str]:
    out = [rng.choice(PREPS)] + _np(rng)
    return out + _pp(rng) if rng.random() < 0.2 else out


def _vp(rng: random.Random) -> List[str]:
    return [rng.choice(V_AMB)] + _pp(rng) if rng.random() < 0.5 else [rng.choice(V_INT)]


def garden_path_corpus(n_tokens: int, seed: int = 0, p_mv: float = 0.6, p_rr: float = 0.2
                       ) -> Tuple[List[str], List[int]]:
    """``(tokens, disambiguation positions)``: sentences until ``n_tokens`` tokens; positions index tokens."""
    if not (0 < p_mv and 0 < p_rr and p_mv + p_rr <= 1):
        raise ValueError(f"need p_mv > 0, p_rr > 0, p_mv + p_rr <= 1; got {p_mv}, {p_rr}")
    rng = random.Random(seed)
    toks: List[str] = []
    disamb: List[int] = []
    while len(toks) < n_tokens:
        r = rng.random()
        subj = _np(rng)
        if r < p_mv:
            sent = subj + _vp(rng)
            point = None
        else:
            rel = ([rng.choice(V_AMB)] if r < p_mv + p_rr else ["that", "was", rng.choice(V_AMB)]) + _pp(rng)
            point = len(subj) + len(rel) if r < p_mv + p_rr else None
            sent = subj + rel + _vp(rng)
        if point is not None:
            disamb.append(len(toks) + point)
        toks += sent + ["."]
    return toks, disamb


_WORD = re.compile(r"[A-Za-z_]+|[0-9]+|[^\sA-Za-z_0-9]")


@lru_cache(maxsize=2)
def stdlib_words(n_tokens: int) -> Tuple[str, ...]:
    """The first ``n_tokens`` word tokens (identifiers/words lower-cased, numbers, punctuation) of the
    Python standard library's source (``gradkit_support.data.stdlib_corpus``)."""
    from gradkit_support.data import stdlib_corpus

    text = stdlib_corpus(n_tokens * 6).decode("utf-8", errors="replace")
    toks = [t.lower() for t in _WORD.findall(text)]
    if len(toks) < n_tokens:
        raise ValueError(f"stdlib corpus gave only {len(toks)} tokens, asked for {n_tokens}")
    return tuple(toks[:n_tokens])


def build_vocab(tokens: List[str], max_size: int) -> Dict[str, int]:
    """``<unk>`` plus the ``max_size − 1`` most frequent tokens (ties by first occurrence)."""
    counts = Counter(tokens)
    vocab = {"<unk>": 0}
    for w, _ in counts.most_common(max_size - 1):
        vocab[w] = len(vocab)
    return vocab


def encode(tokens: List[str], vocab: Dict[str, int]) -> torch.Tensor:
    return torch.tensor([vocab.get(t, 0) for t in tokens], dtype=torch.long)


def batchify(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """``(batch, L)``: ``batch`` contiguous streams (the tail that does not fit is dropped)."""
    n = ids.numel() // batch
    if n < 2:
        raise ValueError(f"{ids.numel()} tokens are too few for {batch} streams")
    return ids[: n * batch].view(batch, n)
