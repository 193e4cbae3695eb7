"""In-context baselines and optimal learners.

Every learner maps a prompt batch ``xs (B, m, n)``, ``ys (B, m)`` to scores ``(B, m)`` where the
score at position ``i`` uses only the examples ``0 .. i-1`` (never ``y_i`` itself).  A score > 0
predicts +1, anything else -1 (:func:`predict`), so a learner with no evidence predicts -1.

* ``null``: always -1 (the majority label of the conjunction-type classes).
* ``averaging``: ``w = sum_{j<i} y_j x_j``, score ``w . x_i``.
* ``nn`` (k-nearest neighbours in Hamming distance, k = 1 by default; ties of distance go to the
  earlier example).  On {-1, 1} inputs cosine similarity is ``1 - 2 Hamming / n``, so the paper's
  cosine nearest neighbour is the same learner and is not listed twice.
* ``least_squares``: minimum-norm solution ``w = pinv(X_{<i}) y_{<i}``, score ``w . x_i``.
* ``elimination`` (optimal for conjunctions): keep every literal (``x_j`` and ``not x_j``), delete the
  literals each positive example falsifies, predict the conjunction of the kept literals.  The
  hypothesis is always consistent with every seen example when the target is a conjunction.
  ``monotone=True`` keeps only positive literals (the class of teach-conjunction).
* ``gf2`` (optimal for parities): Gaussian elimination over GF(2) on ``bits = (x + 1) / 2`` and
  ``c = (y + 1) / 2``; when ``x_i`` lies in the span of the seen inputs its parity label is
  determined and predicted exactly; otherwise the prediction of the solution with free variables 0.
"""

from __future__ import annotations

import numbers
from typing import Callable, Dict

import numpy as np
import torch

from .tasks import check_xs

__all__ = ["LEARNERS", "learner_scores", "predict", "accuracy_per_position", "check_prompt"]


def check_prompt(xs, ys):
    xs = check_xs(xs)
    if not isinstance(ys, torch.Tensor):
        raise TypeError(f"ys must be a torch.Tensor of shape (batch, points), got {type(ys).__name__}")
    if tuple(ys.shape) != tuple(xs.shape[:2]):
        raise ValueError(f"ys must have shape {tuple(xs.shape[:2])} (batch, points) to match xs, got {tuple(ys.shape)}")
    if not torch.is_floating_point(ys) or not torch.isfinite(ys).all() or not ((ys == 1) | (ys == -1)).all():
        raise ValueError("ys must be a floating tensor of labels exactly -1 or +1 (no NaN/inf)")
    return xs, ys


def predict(scores: torch.Tensor) -> torch.Tensor:
    return torch.where(scores > 0, 1.0, -1.0)


def accuracy_per_position(scores: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Fraction of prompts whose label at each position is predicted right: ``(m,)``."""
    if scores.shape != ys.shape:
        raise ValueError(f"scores {tuple(scores.shape)} and ys {tuple(ys.shape)} must have the same shape")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or inf")
    return (predict(scores) == ys).float().mean(0)


def null(xs, ys):
    xs, ys = check_prompt(xs, ys)
    return torch.full(ys.shape, -1.0)


def averaging(xs, ys):
    xs, ys = check_prompt(xs, ys)
    xd, yd = xs.double(), ys.double()
    w = torch.cumsum(yd[:, :, None] * xd, 1)  # w after example j (inclusive)
    w = torch.cat([torch.zeros_like(w[:, :1]), w[:, :-1]], 1)  # exclusive: examples < i
    return (w * xd).sum(-1).float()


def nn(xs, ys, k: int = 1):
    xs, ys = check_prompt(xs, ys)
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    B, m, n = xs.shape
    d = (xs[:, :, None, :] != xs[:, None, :, :]).sum(-1).double()  # (B, i, j) Hamming
    # earlier examples win ties: add a tiny index-proportional term (< 1, distances are integers)
    d = d + torch.arange(m, dtype=torch.float64) / (2.0 * m)
    future = torch.triu(torch.ones(m, m, dtype=torch.bool))  # j >= i is not visible at i
    d = d.masked_fill(future, float("inf"))
    out = torch.full((B, m), -1.0)
    for i in range(1, m):
        kk = min(k, i)
        idx = torch.topk(d[:, i, :i], kk, largest=False).indices
        out[:, i] = ys[:, :i].gather(1, idx).sum(1)
    return out


def least_squares(xs, ys):
    xs, ys = check_prompt(xs, ys)
    B, m, n = xs.shape
    xd, yd = xs.double(), ys.double()
    out = torch.full((B, m), -1.0)
    for i in range(1, m):
        w = torch.linalg.pinv(xd[:, :i]) @ yd[:, :i, None]  # (B, n, 1) min-norm
        out[:, i] = (xd[:, i] * w[..., 0]).sum(-1).float()
    return out


def elimination(xs, ys, monotone: bool = False):
    xs, ys = check_prompt(xs, ys)
    B, m, n = xs.shape
    keep_pos = torch.ones(B, n, dtype=torch.bool)   # literal x_j kept
    keep_neg = torch.zeros(B, n, dtype=torch.bool) if monotone else torch.ones(B, n, dtype=torch.bool)
    out = torch.empty(B, m)
    for i in range(m):
        x = xs[:, i]
        sat = (~keep_pos | (x == 1)).all(1) & (~keep_neg | (x == -1)).all(1)
        out[:, i] = torch.where(sat, 1.0, -1.0)
        pos = ys[:, i] == 1
        keep_pos = torch.where(pos[:, None], keep_pos & (x == 1), keep_pos)
        keep_neg = torch.where(pos[:, None], keep_neg & (x == -1), keep_neg)
    return out


def elimination_monotone(xs, ys):
    return elimination(xs, ys, monotone=True)


def gf2(xs, ys):
    xs, ys = check_prompt(xs, ys)
    B, m, n = xs.shape
    bits = ((xs + 1) / 2).to(torch.int64).numpy()
    labs = ((ys + 1) / 2).to(torch.int64).numpy()
    weights = 1 << np.arange(n, dtype=np.int64)
    masks = (bits * weights).sum(-1)  # (B, m) ints, bit j = x_j on
    out = np.empty((B, m), dtype=np.float32)
    for b in range(B):
        basis: Dict[int, tuple] = {}  # pivot bit -> (row mask, rhs)
        for i in range(m):
            r, c = int(masks[b, i]), 0
            while r:
                p = r.bit_length() - 1
                if p not in basis:
                    break
                br, bc = basis[p]
                r ^= br
                c ^= bc
            # r == 0: x_i in the span, label c is forced; else free part set to 0 -> c
            out[b, i] = 1.0 if c else -1.0
            # insert (x_i, y_i): reduce, then store under its leading bit
            r, c = int(masks[b, i]), int(labs[b, i])
            while r:
                p = r.bit_length() - 1
                if p not in basis:
                    basis[p] = (r, c)
                    break
                br, bc = basis[p]
                r ^= br
                c ^= bc
    return torch.from_numpy(out)


LEARNERS: Dict[str, Callable] = {
    "null": null,
    "averaging": averaging,
    "nn": nn,
    "least_squares": least_squares,
    "elimination": elimination,
    "elimination_monotone": elimination_monotone,
    "gf2": gf2,
}


def learner_scores(name: str, xs, ys) -> torch.Tensor:
    if not isinstance(name, str) or name not in LEARNERS:
        raise ValueError(f"unknown learner {name!r}; expected one of {sorted(LEARNERS)}")
    return LEARNERS[name](xs, ys)
