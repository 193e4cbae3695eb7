"""Hessian approximations of the paper (Semenov, Jaggi, Doikov, 2025) and exact Hessians.

All functions work in float64 torch tensors.

* log-sum-exp ``f(x) = μ log Σ_i exp((a_iᵀx - b_i)/μ)``:
  exact ``∇²f = (1/μ)(Aᵀ diag(π) A - (Aᵀπ)(Aᵀπ)ᵀ)``, π = softmax((Ax - b)/μ);
  weighted Gauss–Newton ``H = (1/μ) Aᵀ diag(π) A`` (drops the rank-one term, H ⪰ ∇²f).
* softmax regression (cross-entropy of ``softmax(XW)``) is a log-sum-exp of linear
  maps per example: weighted Gauss–Newton ``H = (1/m) Σ_i diag(p_i) ⊗ x_i x_iᵀ`` (+ λI),
  exact ``(1/m) Σ_i (diag(p_i) - p_i p_iᵀ) ⊗ x_i x_iᵀ`` (+ λI).
* logistic regression ``(1/m) Σ log(1 + exp(-b_i a_iᵀx))`` is the log-sum-exp of
  ``(0, -b_i a_iᵀx)``; the same weighted Gauss–Newton gives
  ``H = (1/m) Σ σ(-b_i a_iᵀx) a_i a_iᵀ`` (+ λI) vs exact weights ``σ(1-σ)``.
* ``f(x) = ‖u(x)‖^p / p`` with Jacobian ``J``:
  Fisher term (rank one) ``(p-2)‖u‖^{p-4}(Jᵀu)(Jᵀu)ᵀ``;
  Gauss–Newton ``‖u‖^{p-2} JᵀJ``; the code's "inexact Hessian" is their sum.
"""

from __future__ import annotations

from typing import Callable

import attrs
import torch

DTYPE = torch.float64


@attrs.frozen
class RankOne:
    """The matrix ``alpha · v vᵀ`` (solved with Sherman–Morrison, never formed)."""

    alpha: float
    v: torch.Tensor

    def dense(self) -> torch.Tensor:
        return self.alpha * torch.outer(self.v, self.v)


def _f64(t) -> torch.Tensor:
    return torch.as_tensor(t, dtype=DTYPE)


# ---------------------------------------------------------------------- log-sum-exp
def lse_weights(A: torch.Tensor, x: torch.Tensor, mu: float = 1.0, b=None) -> torch.Tensor:
    z = A @ x
    if b is not None:
        z = z - b
    return torch.softmax(z / mu, 0)


def weighted_gauss_newton_lse(A: torch.Tensor, x: torch.Tensor, mu: float = 1.0, b=None) -> torch.Tensor:
    """``(1/μ) Aᵀ diag(π) A`` for ``f(x) = μ log Σ exp((Ax - b)/μ)``."""
    A, x = _f64(A), _f64(x)
    pi = lse_weights(A, x, mu, None if b is None else _f64(b))
    return (A.T * pi) @ A / mu


def exact_hessian_lse(A: torch.Tensor, x: torch.Tensor, mu: float = 1.0, b=None) -> torch.Tensor:
    A, x = _f64(A), _f64(x)
    pi = lse_weights(A, x, mu, None if b is None else _f64(b))
    g = A.T @ pi
    return ((A.T * pi) @ A - torch.outer(g, g)) / mu


# ---------------------------------------------------------------------- logistic regression
def weighted_gauss_newton_logistic(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, lam: float = 0.0) -> torch.Tensor:
    """``(1/m) Σ σ(-b_i a_iᵀx) a_i a_iᵀ + λI`` (labels ``b ∈ {-1, +1}``)."""
    A, b, x = _f64(A), _f64(b), _f64(x)
    w = torch.sigmoid(-b * (A @ x))
    return (A.T * w) @ A / A.shape[0] + lam * torch.eye(A.shape[1], dtype=DTYPE)


def exact_hessian_logistic(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, lam: float = 0.0) -> torch.Tensor:
    A, b, x = _f64(A), _f64(b), _f64(x)
    s = torch.sigmoid(-b * (A @ x))
    return (A.T * (s * (1 - s))) @ A / A.shape[0] + lam * torch.eye(A.shape[1], dtype=DTYPE)


def bohning_logistic(A: torch.Tensor, lam: float = 0.0) -> torch.Tensor:
    """Böhning's constant bound ``(1/(4m)) AᵀA + λI ⪰ ∇²f`` for logistic regression (σ(1-σ) ≤ 1/4)."""
    A = _f64(A)
    return A.T @ A / (4 * A.shape[0]) + lam * torch.eye(A.shape[1], dtype=DTYPE)


# ---------------------------------------------------------------------- softmax regression
def _softmax_probs(X: torch.Tensor, w: torch.Tensor, n_classes: int) -> torch.Tensor:
    W = w.view(X.shape[1], n_classes)
    return torch.softmax(X @ W, 1)


def weighted_gauss_newton_softmax(X: torch.Tensor, w: torch.Tensor, n_classes: int, lam: float = 0.0) -> torch.Tensor:
    """``(1/m) Σ_i diag(p_i) ⊗ x_i x_iᵀ + λI`` for ``w = vec(W)``, ``W ∈ R^{d×C}`` (row-major)."""
    X, w = _f64(X), _f64(w)
    m, d = X.shape
    P = _softmax_probs(X, w, n_classes)
    H = torch.zeros(d, n_classes, d, n_classes, dtype=DTYPE)
    blocks = torch.stack([(X.T * P[:, c]) @ X for c in range(n_classes)]) / m  # per-class (d, d)
    for c in range(n_classes):
        H[:, c, :, c] = blocks[c]
    return H.reshape(d * n_classes, d * n_classes) + lam * torch.eye(d * n_classes, dtype=DTYPE)


def exact_hessian_softmax(X: torch.Tensor, w: torch.Tensor, n_classes: int, lam: float = 0.0) -> torch.Tensor:
    X, w = _f64(X), _f64(w)
    m, d = X.shape
    P = _softmax_probs(X, w, n_classes)
    C = n_classes
    S = torch.diag_embed(P) - P[:, :, None] * P[:, None, :]  # (m, C, C)
    # H[j, c, k, e] = (1/m) Σ_i X[i, j] S[i, c, e] X[i, k], as one (d × m) @ (m × C·C·d) product
    K = X.T @ (S.reshape(m, C * C, 1) * X[:, None, :]).reshape(m, C * C * d)
    H = K.view(d, C, C, d).permute(0, 1, 3, 2) / m
    return H.reshape(d * C, d * C) + lam * torch.eye(d * C, dtype=DTYPE)


def bohning_softmax(X: torch.Tensor, n_classes: int, lam: float = 0.0) -> torch.Tensor:
    """Böhning's constant bound ``½(I - 11ᵀ/C) ⊗ XᵀX/m + λI`` (in the row-major ``vec(W)`` order)."""
    X = _f64(X)
    m, d = X.shape
    C = n_classes
    Q = 0.5 * (torch.eye(C, dtype=DTYPE) - torch.full((C, C), 1.0 / C, dtype=DTYPE))
    H = torch.kron(X.T @ X / m, Q)  # (d·C, d·C) with index j·C + c
    return H + lam * torch.eye(d * C, dtype=DTYPE)


# ---------------------------------------------------------------------- ‖u(x)‖^p / p
def fisher_rank_one(J: torch.Tensor, u: torch.Tensor, p: float) -> RankOne:
    """Fisher term ``(p-2)‖u‖^{p-4}(Jᵀu)(Jᵀu)ᵀ`` as a :class:`RankOne`."""
    J, u = _f64(J), _f64(u)
    nu = torch.linalg.norm(u)
    if p == 2 or float(nu) == 0.0:
        return RankOne(0.0, torch.zeros(J.shape[1], dtype=DTYPE))
    return RankOne(float((p - 2) * nu ** (p - 4)), J.T @ u)


def gauss_newton(J: torch.Tensor, u: torch.Tensor, p: float = 2.0, fisher: bool = False) -> torch.Tensor:
    """Gauss–Newton ``‖u‖^{p-2} JᵀJ`` (plus the Fisher term when ``fisher=True``, the code's
    "inexact Hessian" for nonlinear equations)."""
    J, u = _f64(J), _f64(u)
    nu = torch.linalg.norm(u)
    H = nu ** (p - 2) * (J.T @ J) if p != 2 else J.T @ J
    if fisher:
        H = H + fisher_rank_one(J, u, p).dense()
    return H


def exact_hessian(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Exact Hessian of a scalar torch function of a vector by autograd (float64)."""
    x = _f64(x).detach()
    return torch.autograd.functional.hessian(f, x)
