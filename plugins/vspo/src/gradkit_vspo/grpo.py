"""GRPO pieces shared by every arm: group advantages, the clipped policy-gradient loss, task value.

Conventions follow ``trl``'s ``GRPOTrainer`` (1.16): advantages ``A = r - mean_G(r)`` divided by
``std_G(r) + 1e-4`` (unbiased std over the G completions of a prompt); per-token ratio
``rho = exp(logp - old_logp)``; per-token loss ``-min(rho*A, clip(rho, 1-eps_low, 1+eps_high)*A)``;
``loss_type="grpo"`` averages tokens within a sequence then sequences, ``"bnpo"``/``"dapo"`` average over
all unmasked tokens of the batch (single process, no accumulation).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import torch

LOSS_TYPES = ("grpo", "bnpo", "dapo")


def _check_finite(name: str, t: torch.Tensor) -> None:
    if not torch.is_tensor(t):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); expected at least one element")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} contains NaN or inf; rewards/log-probs must be finite")


def grpo_advantages(rewards: torch.Tensor, *, scale: str = "std", eps: float = 1e-4,
                    baseline: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Group-relative advantages for ``rewards`` of shape ``(B, G)`` (B prompts, G completions each).

    ``scale="std"``: ``(r - b) / (std_G(r) + eps)``; ``scale="none"``: ``r - b`` (Dr. GRPO).  ``b`` is the
    group mean, or ``baseline`` (shape ``(B,)``) when given (VSPO's value-smoothed baseline).
    """
    _check_finite("rewards", rewards)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape (B, G), got {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(f"a group needs at least 2 completions to define a relative advantage, got G={rewards.shape[1]}")
    if scale not in ("std", "none"):
        raise ValueError(f"unknown scale {scale!r}; expected 'std' or 'none'")
    if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite positive number, got {eps!r}")
    r = rewards.float()
    if baseline is None:
        b = r.mean(dim=1, keepdim=True)
    else:
        _check_finite("baseline", baseline)
        if baseline.shape != (r.shape[0],):
            raise ValueError(f"baseline must have shape ({r.shape[0]},), got {tuple(baseline.shape)}")
        b = baseline.float().unsqueeze(1)
    adv = r - b
    if scale == "std":
        adv = adv / (r.std(dim=1, keepdim=True) + eps)
    return adv


def zero_advantage_mask(rewards: torch.Tensor, *, atol: float = 1e-8) -> torch.Tensor:
    """``(B,)`` bool: groups whose G rewards are all equal (every GRPO advantage is zero)."""
    _check_finite("rewards", rewards)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape (B, G), got {tuple(rewards.shape)}")
    return (rewards.max(dim=1).values - rewards.min(dim=1).values) <= atol


def clipped_pg_loss(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, *,
                    clip: Tuple[float, float] = (0.2, 0.2), token_mask: Optional[torch.Tensor] = None,
                    loss_type: str = "grpo") -> torch.Tensor:
    """PPO-style clipped surrogate on per-token log-probs ``(N, T)``, one advantage per sequence ``(N,)``."""
    _check_finite("logp", logp)
    _check_finite("old_logp", old_logp)
    _check_finite("adv", adv)
    if logp.dim() != 2 or old_logp.shape != logp.shape:
        raise ValueError(f"logp and old_logp must share a shape (N, T); got {tuple(logp.shape)} and {tuple(old_logp.shape)}")
    if adv.shape != (logp.shape[0],):
        raise ValueError(f"adv must have shape ({logp.shape[0]},), got {tuple(adv.shape)}")
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}")
    lo, hi = _check_clip(clip)
    if token_mask is None:
        mask = torch.ones_like(logp)
    else:
        if token_mask.shape != logp.shape:
            raise ValueError(f"token_mask must have shape {tuple(logp.shape)}, got {tuple(token_mask.shape)}")
        mask = token_mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    a = adv.to(logp.dtype).unsqueeze(1)
    per_tok = -torch.min(ratio * a, torch.clamp(ratio, 1 - lo, 1 + hi) * a)
    if loss_type == "grpo":
        return ((per_tok * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    return (per_tok * mask).sum() / mask.sum().clamp(min=1.0)


def _check_clip(clip: Sequence[float]) -> Tuple[float, float]:
    try:
        lo, hi = (float(c) for c in clip)
    except (TypeError, ValueError):
        raise TypeError(f"clip must be a pair (eps_low, eps_high), got {clip!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < 1 and hi > 0):
        raise ValueError(f"clip=(eps_low, eps_high) needs 0 < eps_low < 1 and eps_high > 0 (finite), got {clip!r}")
    return lo, hi


def task_value(p: torch.Tensor, *, a: float = 1.0, b: float = 1.0) -> torch.Tensor:
    """Task value ``V(p) = (1 - p)^a * [p (1 - p)]^b`` of prompts with estimated success ``p`` in [0, 1].

    Reconstruction (the paper's exact form is not public): ``(1-p)^a`` rewards difficulty, ``p(1-p)`` (the
    Bernoulli variance) rewards uncertainty; the product is 0 for solved (p=1) and hopeless (p=0) prompts.
    """
    _check_finite("p", p)
    if (p < 0).any() or (p > 1).any():
        raise ValueError("success estimates p must lie in [0, 1]")
    for name, v in (("a", a), ("b", b)):
        if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
            raise ValueError(f"task-value exponent {name} must be finite and >= 0, got {v!r}")
    return (1 - p) ** a * (p * (1 - p)) ** b
