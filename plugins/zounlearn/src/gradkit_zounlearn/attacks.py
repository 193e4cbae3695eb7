"""Post-unlearning attacks: round-to-nearest weight quantization and relearning.

* :func:`rtn_quantize` — symmetric round-to-nearest N-bit quantization of a weight tensor in groups
  of ``group_size`` consecutive inputs of each output channel: ``s = max|w_group| / (2^(N-1) - 1)``,
  ``w_q = s * clamp(round(w / s), -2^(N-1), 2^(N-1) - 1)``; hence ``|w - w_q| <= s / 2``.
* :func:`quantize_rtn_` — applies it in place to every weight matrix (``dim >= 2``) of a model;
  biases and normalisation parameters stay in full precision (weight-only quantization).
* :func:`relearn_attack` — a few Adam fine-tuning steps on a small forget subset (on a copy).
"""

from __future__ import annotations

import copy
import itertools
from typing import Callable, Iterable, Optional

import torch
import torch.nn as nn


def rtn_quantize(w: torch.Tensor, bits: int = 4, group_size: int = 32) -> torch.Tensor:
    """Quantize-dequantize ``w`` (any shape, output channels first) with round-to-nearest."""
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an int in [2, 16], got {bits!r}")
    if not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be a positive int, got {group_size!r}")
    if w.dim() == 0:
        raise ValueError("cannot quantize a scalar")
    shape = w.shape
    x = w.detach().float().reshape(shape[0], -1) if w.dim() > 1 else w.detach().float().reshape(1, -1)
    n = x.shape[1]
    pad = (-n) % group_size
    if pad:
        x = torch.cat([x, x.new_zeros(x.shape[0], pad)], 1)
    g = x.reshape(x.shape[0], -1, group_size)
    qmax = 2 ** (bits - 1) - 1
    scale = g.abs().amax(-1, keepdim=True) / qmax
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.clamp(torch.round(g / scale), -qmax - 1, qmax) * scale
    out = q.reshape(x.shape[0], -1)[:, :n].reshape(shape)
    return out.to(w.dtype)


@torch.no_grad()
def quantize_rtn_(model: nn.Module, bits: int = 4, group_size: int = 32,
                  include: Optional[Callable[[str, torch.Tensor], bool]] = None) -> nn.Module:
    """Quantize every weight with ``dim >= 2`` (or those ``include(name, p)`` selects) in place."""
    seen = set()
    for name, p in model.named_parameters():
        if id(p) in seen:  # tied weights are quantized once
            continue
        seen.add(id(p))
        take = include(name, p) if include is not None else p.dim() >= 2
        if take:
            p.copy_(rtn_quantize(p, bits, group_size))
    return model


def _nll(model, batch):
    from .objectives import mean_nll, _batch

    ids, mask, attn = _batch(batch, "relearn")
    return mean_nll(model, ids, mask, attn)


def relearn_attack(model: nn.Module, data: Iterable, *, steps: int = 50, lr: float = 1e-4,
                   seed: int = 0) -> nn.Module:
    """Fine-tune a *copy* of ``model`` for ``steps`` Adam steps on ``data`` (cycled); returns the copy."""
    batches = list(data)
    if not batches:
        raise ValueError("relearn_attack needs at least one batch of forget-set data")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    torch.manual_seed(seed)
    m = copy.deepcopy(model)
    m.train()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
    for _, b in zip(range(steps), itertools.cycle(batches)):
        opt.zero_grad(set_to_none=True)
        _nll(m, b).backward()
        opt.step()
    m.eval()
    return m


def quantization_recovery(model: nn.Module, score_fn: Callable[[nn.Module], float], bits: int = 4,
                          group_size: int = 32) -> float:
    """``score_fn(quantized copy) - score_fn(model)``: knowledge regained by RTN quantization (lower = more robust)."""
    q = quantize_rtn_(copy.deepcopy(model), bits, group_size)
    return float(score_fn(q)) - float(score_fn(model))


def relearn_recovery(model: nn.Module, data: Iterable, score_fn: Callable[[nn.Module], float], *, steps: int = 50,
                     lr: float = 1e-4, seed: int = 0) -> float:
    """``score_fn(relearned copy) - score_fn(model)`` (lower = more robust)."""
    return float(score_fn(relearn_attack(model, data, steps=steps, lr=lr, seed=seed))) - float(score_fn(model))
