"""The continued-fraction ladder of CoFrGeNet (Dhurandhar et al., arXiv 2601.21766, §3).

A ladder of depth d maps partial denominators a_1..a_d to

    f(a) = 1 / (a_1 + 1 / (a_2 + ... + 1 / a_d)).

Continuants (eqs. 4-5): K_0 = 1, K_1 = a_d, K_j = a_{d-j+1} K_{j-1} + K_{j-2}; K_j is the continuant of the
last j terms, and f = K_{d-1} / K_d: one division instead of d.

Proposition 1 (closed-form gradient): df/da_k = (-1)^k (K_{d-k} / K_d)^2, k = 1..d, where K_{d-k} is the
continuant of a_{k+1..d}.  The backward reuses the cached 1/K_d.

Pole avoidance (as in CoFrNet, applied once, to K_d): K_d <- sign(K_d) max(|K_d|, eps) with sign(0) = +1.
When the clamp is active the backward uses the clamped K_d in Prop. 1 (bounded by (K_{d-k}/eps)^2); away from
poles it is the exact derivative.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

MODES = ("multivariate", "elementwise")


def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
        raise ValueError(f"eps must be a finite positive number (the pole clamp |K_d| >= eps), got {eps!r}")
    return float(eps)


def _check_partial_denominators(a) -> None:
    if not isinstance(a, torch.Tensor):
        raise TypeError(f"partial denominators must be a torch.Tensor of shape (..., depth), got {type(a).__name__}")
    if not a.is_floating_point():
        raise TypeError(f"partial denominators must be floating point, got dtype {a.dtype}")
    if a.dim() < 1 or a.shape[-1] < 1:
        raise ValueError(f"a continued fraction needs depth >= 1: expected shape (..., depth) with depth >= 1, "
                         f"got shape {tuple(a.shape)}")
    if not bool(torch.isfinite(a).all()):
        raise ValueError("partial denominators contain NaN or inf; expected finite values")


def _clamp_pole(kd: torch.Tensor, eps: float) -> torch.Tensor:
    """sign(K_d) * max(|K_d|, eps), with sign(0) = +1."""
    return torch.where(kd >= 0, kd.clamp(min=eps), kd.clamp(max=-eps))


def continuants(a: torch.Tensor) -> torch.Tensor:
    """``K[..., j]`` = K_j (continuant of the last j partial denominators), j = 0..d; shape ``(..., d + 1)``."""
    _check_partial_denominators(a)
    d = a.shape[-1]
    ks = [torch.ones_like(a[..., 0]), a[..., d - 1]]
    for j in range(2, d + 1):
        ks.append(a[..., d - j] * ks[-1] + ks[-2])
    return torch.stack(ks, -1)


class ContinuedFraction(torch.autograd.Function):
    """Continuant forward (one division) and the closed-form backward of Prop. 1 (one cached 1/K_d)."""

    @staticmethod
    def forward(ctx, a: torch.Tensor, eps: float) -> torch.Tensor:  # type: ignore[override]
        d = a.shape[-1]
        k_prev, k_cur = torch.ones_like(a[..., 0]), a[..., d - 1]
        ks = [k_prev, k_cur]
        for j in range(2, d + 1):
            k_prev, k_cur = k_cur, torch.addcmul(k_prev, a[..., d - j], k_cur)
            ks.append(k_cur)
        inv_kd = _clamp_pole(ks[d], eps).reciprocal()
        out = ks[d - 1] * inv_kd
        # K_{d-k} for k = 1..d is K_{d-1}, ..., K_0: store in that order so backward needs no flip
        ctx.save_for_backward(torch.stack(ks[d - 1::-1], -1), inv_kd)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):  # type: ignore[override]
        k_rev, inv_kd = ctx.saved_tensors
        d = k_rev.shape[-1]
        r = k_rev * inv_kd.unsqueeze(-1)  # K_{d-k} / K_d
        sign = torch.ones(d, dtype=r.dtype, device=r.device)
        sign[0::2] = -1.0  # (-1)^k for k = 1..d
        return grad_out.unsqueeze(-1) * sign * r * r, None


def continued_fraction(a: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """``f(a) = 1/(a_1 + 1/(a_2 + ... + 1/a_d))`` over the last axis of ``a`` (shape ``(..., d)``, d >= 1).

    Continuant forward, Prop. 1 backward, pole clamp ``|K_d| >= eps``.  Returns shape ``a.shape[:-1]``.
    """
    _check_partial_denominators(a)
    return ContinuedFraction.apply(a, _check_eps(eps))


def continued_fraction_nested(a: torch.Tensor, eps: Optional[float] = None) -> torch.Tensor:
    """Reference: the nested form with d divisions, differentiated by autograd.

    ``eps=None``: no clamp (exact); otherwise CoFrNet's per-level clamp of every denominator.
    """
    _check_partial_denominators(a)
    if eps is not None:
        eps = _check_eps(eps)
    d = a.shape[-1]
    den = a[..., d - 1]
    for k in range(d - 2, -1, -1):
        den = a[..., k] + (den if eps is None else _clamp_pole(den, eps)).reciprocal()
    return (den if eps is None else _clamp_pole(den, eps)).reciprocal()


def continued_fraction_autograd(a: torch.Tensor, eps: float = 1e-2) -> torch.Tensor:
    """The same continuant recursion and clamp as :func:`continued_fraction`, differentiated by autograd
    (a baseline for the benchmark: autograd through the recursion instead of Prop. 1)."""
    _check_partial_denominators(a)
    eps = _check_eps(eps)
    d = a.shape[-1]
    k_prev, k_cur = torch.ones_like(a[..., 0]), a[..., d - 1]
    for j in range(2, d + 1):
        k_prev, k_cur = k_cur, a[..., d - j] * k_cur + k_prev
    return k_prev / _clamp_pole(k_cur, eps)


def _check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


class CoFrLadder(nn.Module):
    """``n_ladders`` continued-fraction ladders of depth ``depth`` on inputs of size ``in_features``.

    ``mode="multivariate"`` (the paper's eq. 8, CoFrNet's ladder): ladder j has partial denominators
    ``a_{j,k} = w_{j,k}^T x + b_{j,k}``; output ``(..., n_ladders)``.
    ``mode="elementwise"`` (the reading of a third-party reimplementation): ``a_{j,k} = w_{j,k} * x + b_{j,k}``
    element by element, so each ladder gives ``in_features`` fractions; output ``(..., n_ladders, in_features)``.

    ``trainable_depth`` (default: all) freezes the partial denominators of depth > trainable_depth (their
    weights and biases get zero gradient); the dyadic schedule raises it during training.
    Biases start at ``init_bias`` (1.0: every K_j starts near a Fibonacci number, far from a pole) and weights
    at N(0, ``init_std``^2).
    """

    def __init__(self, in_features: int, depth: int = 5, n_ladders: int = 1, mode: str = "multivariate",
                 eps: float = 1e-2, bias: bool = True, init_bias: float = 1.0, init_std: float = 0.02):
        super().__init__()
        self.in_features = _check_positive_int("in_features", in_features)
        self.depth = _check_positive_int("depth", depth)
        self.n_ladders = _check_positive_int("n_ladders", n_ladders)
        if mode not in MODES:
            raise ValueError(f"unknown ladder mode {mode!r}; expected one of {MODES}")
        self.mode = mode
        self.eps = _check_eps(eps)
        for name, v in (("init_bias", init_bias), ("init_std", init_std)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ValueError(f"{name} must be a finite number, got {v!r}")
        if init_std < 0:
            raise ValueError(f"init_std must be >= 0, got {init_std}")
        if mode == "multivariate":
            self.weight = nn.Parameter(torch.randn(n_ladders, depth, in_features) * init_std)
            self.bias = nn.Parameter(torch.full((n_ladders, depth), float(init_bias))) if bias else None
        else:
            self.weight = nn.Parameter(torch.randn(n_ladders, in_features, depth) * init_std)
            self.bias = nn.Parameter(torch.full((n_ladders, in_features, depth), float(init_bias))) if bias else None
        self.trainable_depth = depth

    def set_trainable_depth(self, k: int) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.depth:
            raise ValueError(f"trainable depth must be an integer in [0, {self.depth}], got {k!r}")
        self.trainable_depth = k

    def _frozen(self, p: torch.Tensor) -> torch.Tensor:
        if self.trainable_depth >= self.depth:
            return p
        shape = [1] * p.dim()
        axis = 1 if self.mode == "multivariate" else p.dim() - 1
        shape[axis] = self.depth
        live = (torch.arange(self.depth, device=p.device) < self.trainable_depth).view(shape)
        return torch.where(live, p, p.detach())

    def partial_denominators(self, x: torch.Tensor) -> torch.Tensor:
        w = self._frozen(self.weight)
        b = None if self.bias is None else self._frozen(self.bias)
        if self.mode == "multivariate":
            a = F.linear(x, w.reshape(-1, self.in_features), None if b is None else b.reshape(-1))
            return a.view(*x.shape[:-1], self.n_ladders, self.depth)
        a = x[..., None, :, None] * w
        return a if b is None else a + b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[-1] != self.in_features:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"CoFrLadder expects input (..., {self.in_features}), got {shape}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("CoFrLadder input contains NaN or inf")
        return ContinuedFraction.apply(self.partial_denominators(x), self.eps)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, depth={self.depth}, n_ladders={self.n_ladders}, "
                f"mode={self.mode!r}, eps={self.eps}, trainable_depth={self.trainable_depth}")
