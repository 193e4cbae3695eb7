"""Memorization metrics of the paper: memorization accuracy (MA) and extraction likelihood (EL_n).

Both take token ids ``(B, T)`` and a boolean ``mask`` ``(B, T)`` marking the tokens whose
memorization is measured (the secret tokens; or the non-secret context).  Lower is
better (less memorized).  Samples with no measurable token give NaN.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn

from .unlearn import forward_logits


def _check(input_ids: torch.Tensor, mask: torch.Tensor) -> None:
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        raise ValueError("input_ids must be a (B, T) integer tensor")
    if mask.shape != input_ids.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal input_ids shape {tuple(input_ids.shape)}")


@torch.no_grad()
def memorization_accuracy(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor,
                          attention_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """MA per sample ``(B,)``: share of masked tokens ``t >= 1`` with ``argmax p(. | x_<t) == x_t``.

    Teacher-forced (the true prefix is given).  Lower = less memorized.
    """
    _check(input_ids, mask)
    was = model.training
    model.eval()
    logits = forward_logits(model, input_ids, attention_mask)
    model.train(was)
    hit = (logits[:, :-1].argmax(-1) == input_ids[:, 1:]).float()
    m = mask[:, 1:].bool()
    if attention_mask is not None:
        m = m & attention_mask[:, 1:].bool()
    m = m.float()
    n = m.sum(1)
    out = (hit * m).sum(1) / n.clamp_min(1)
    return torch.where(n > 0, out, torch.full_like(out, float("nan")))


@torch.no_grad()
def extraction_likelihood(model: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor, n: int = 3,
                          batch_rows: int = 512) -> torch.Tensor:
    """EL_n per sample ``(B,)``: share of masked n-grams regenerated exactly by greedy decoding.

    For every start ``t >= 1`` whose n tokens ``x_t .. x_{t+n-1}`` are all masked, decode ``n``
    tokens greedily from the true prefix ``x_<t``; EL_n is the fraction of such starts whose
    decoded n-gram equals the true one.  (A strict, exact-match reading of the paper's "share of
    secret n-grams recovered by greedy decoding from each prefix position".)  Samples without a
    masked n-gram get NaN.  Lower = less extractable.
    """
    _check(input_ids, mask)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    b, t_len = input_ids.shape
    m = mask.bool()
    rows, owner, starts = [], [], []
    for i in range(b):
        for t in range(1, t_len - n + 1):
            if bool(m[i, t : t + n].all()):
                rows.append(i)
                starts.append(t)
    out = torch.full((b,), float("nan"))
    if not rows:
        return out
    was = model.training
    model.eval()
    hits = torch.zeros(len(rows))
    for c in range(0, len(rows), batch_rows):
        r = torch.tensor(rows[c : c + batch_rows])
        st = torch.tensor(starts[c : c + batch_rows])
        seq = input_ids[r].clone()
        ar = torch.arange(len(r))
        # the model only sees tokens up to start + n - 1, so crop to the longest needed prefix
        seq = seq[:, : int(st.max()) + n]
        ok = torch.ones(len(r), dtype=torch.bool)
        for k in range(n):
            pos = st + k
            logits = forward_logits(model, seq[:, : int(pos.max())], None)
            pred = logits[ar, pos - 1].argmax(-1)
            ok &= pred == input_ids[r, pos]
            seq[ar, pos] = pred
        hits[c : c + len(r)] = ok.float()
    model.train(was)
    sums = torch.zeros(b).index_add_(0, torch.tensor(rows), hits)
    cnts = torch.zeros(b).index_add_(0, torch.tensor(rows), torch.ones(len(rows)))
    out[cnts > 0] = (sums / cnts.clamp_min(1))[cnts > 0]
    return out
