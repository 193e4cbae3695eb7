"""Test problems of the paper with closed-form gradients, exact and approximate Hessians (float64).

Each problem has ``func(x)``, ``grad(x)``, ``hess(x)`` (exact), ``approx_hess(x)``
(the paper's approximation), ``x0`` and ``n``.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from . import hessians as Hs
from .gns import Problem
from .hessians import DTYPE, RankOne


class LogSumExp(Problem):
    """``f(x) = μ log Σ_i exp((a_iᵀx - b_i)/μ) - cᵀx``, rows ``a_i`` of ``A`` (m × n).

    The linear term ``c`` does not change any Hessian.  :meth:`random` uses the
    "zero oracle" recipe: ``c = ∇(μ LSE)(0)``, so that ``∇f(0) = 0``, ``x* = 0`` and
    ``f* = f(0)`` are known exactly.
    """

    def __init__(self, A: torch.Tensor, b: Optional[torch.Tensor] = None, mu: float = 1.0,
                 c: Optional[torch.Tensor] = None):
        super().__init__()
        self.A = torch.as_tensor(A, dtype=DTYPE)
        self.b = torch.zeros(self.A.shape[0], dtype=DTYPE) if b is None else torch.as_tensor(b, dtype=DTYPE)
        self.mu = float(mu)
        self.n = self.A.shape[1]
        self.c = torch.zeros(self.n, dtype=DTYPE) if c is None else torch.as_tensor(c, dtype=DTYPE)

    @classmethod
    def random(cls, m: int = 300, n: int = 300, mu: float = 1.0, seed: int = 0) -> "LogSumExp":
        """``A, b ~ U[-1, 1]``, ``c`` such that the minimum is at ``x* = 0``."""
        g = torch.Generator().manual_seed(seed)
        A = 2 * torch.rand(m, n, generator=g, dtype=DTYPE) - 1
        b = 2 * torch.rand(m, generator=g, dtype=DTYPE) - 1
        prob = cls(A, b, mu)
        prob.c = prob.grad(torch.zeros(n, dtype=DTYPE))
        prob.f_star = float(prob.func(torch.zeros(n, dtype=DTYPE)))
        return prob

    def _z(self, x):
        return (self.A @ x - self.b) / self.mu

    def func(self, x):
        return self.mu * torch.logsumexp(self._z(x), 0) - self.c @ x

    def grad(self, x):
        return self.A.T @ torch.softmax(self._z(x), 0) - self.c

    def hess(self, x):
        return Hs.exact_hessian_lse(self.A, x, self.mu, self.b)

    def approx_hess(self, x):
        return Hs.weighted_gauss_newton_lse(self.A, x, self.mu, self.b)


class LogisticRegression(Problem):
    """``f(x) = (1/m) Σ log(1 + exp(-b_i a_iᵀx)) + (λ/2)‖x‖²`` with labels ``b ∈ {±1}``."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor, lam: float = 1e-4):
        super().__init__()
        self.A = torch.as_tensor(A, dtype=DTYPE)
        self.b = torch.as_tensor(b, dtype=DTYPE)
        if not set(self.b.unique().tolist()) <= {-1.0, 1.0}:
            raise ValueError("logistic regression labels must be -1 or +1")
        self.lam = float(lam)
        self.n = self.A.shape[1]

    @classmethod
    def breast_cancer(cls, lam: float = 1e-4) -> "LogisticRegression":
        """scikit-learn's breast-cancer data, standardised, with a bias column."""
        from sklearn.datasets import load_breast_cancer

        d = load_breast_cancer()
        X = torch.as_tensor(d.data, dtype=DTYPE)
        X = (X - X.mean(0)) / X.std(0)
        X = torch.cat([X, torch.ones(len(X), 1, dtype=DTYPE)], 1)
        y = torch.as_tensor(d.target, dtype=DTYPE) * 2 - 1
        return cls(X, y, lam)

    def func(self, x):
        return torch.nn.functional.softplus(-self.b * (self.A @ x)).mean() + 0.5 * self.lam * (x @ x)

    def grad(self, x):
        s = torch.sigmoid(-self.b * (self.A @ x))
        return -(self.A.T @ (self.b * s)) / self.A.shape[0] + self.lam * x

    def hess(self, x):
        return Hs.exact_hessian_logistic(self.A, self.b, x, self.lam)

    def approx_hess(self, x):
        return Hs.weighted_gauss_newton_logistic(self.A, self.b, x, self.lam)

    def bohning_hess(self, x):
        if getattr(self, "_bohning", None) is None:
            self._bohning = Hs.bohning_logistic(self.A, self.lam)
        return self._bohning


class SoftmaxRegression(Problem):
    """Mean cross-entropy of ``softmax(X W)`` + ``(λ/2)‖W‖²``, ``x = vec(W)``, ``W ∈ R^{d×C}``."""

    def __init__(self, X: torch.Tensor, y: torch.Tensor, n_classes: int, lam: float = 1e-4):
        super().__init__()
        self.X = torch.as_tensor(X, dtype=DTYPE)
        self.y = torch.as_tensor(y, dtype=torch.long)
        self.C = int(n_classes)
        self.lam = float(lam)
        self.n = self.X.shape[1] * self.C
        self.Y = torch.nn.functional.one_hot(self.y, self.C).to(DTYPE)

    @classmethod
    def digits(cls, lam: float = 1e-4) -> "SoftmaxRegression":
        """scikit-learn's 8×8 digits, pixels / 16 (64 features × 10 classes = 640 parameters)."""
        from sklearn.datasets import load_digits

        d = load_digits()
        return cls(torch.as_tensor(d.data / 16.0, dtype=DTYPE), torch.as_tensor(d.target), 10, lam)

    def _logits(self, x):
        return self.X @ x.view(self.X.shape[1], self.C)

    def func(self, x):
        z = self._logits(x)
        return (torch.logsumexp(z, 1) - (z * self.Y).sum(1)).mean() + 0.5 * self.lam * (x @ x)

    def grad(self, x):
        P = torch.softmax(self._logits(x), 1)
        return (self.X.T @ (P - self.Y) / self.X.shape[0]).reshape(-1) + self.lam * x

    def hess(self, x):
        return Hs.exact_hessian_softmax(self.X, x, self.C, self.lam)

    def approx_hess(self, x):
        return Hs.weighted_gauss_newton_softmax(self.X, x, self.C, self.lam)

    def bohning_hess(self, x):
        if getattr(self, "_bohning", None) is None:
            self._bohning = Hs.bohning_softmax(self.X, self.C, self.lam)
        return self._bohning


class PowerResidual(Problem):
    """``f(x) = ‖Ax - b‖^p / p`` (``u = Ax - b``, ``J = A``); Fisher-term / Gauss–Newton approximations."""

    def __init__(self, A: torch.Tensor, b: torch.Tensor, p: float = 4.0):
        super().__init__()
        self.A = torch.as_tensor(A, dtype=DTYPE)
        self.b = torch.as_tensor(b, dtype=DTYPE)
        self.p = float(p)
        self.n = self.A.shape[1]

    @classmethod
    def random(cls, m: int = 200, n: int = 100, p: float = 4.0, seed: int = 0) -> "PowerResidual":
        g = torch.Generator().manual_seed(seed)
        A = torch.randn(m, n, generator=g, dtype=DTYPE) / math.sqrt(m)
        b = torch.randn(m, generator=g, dtype=DTYPE)
        return cls(A, b, p)

    def u(self, x):
        return self.A @ x - self.b

    def func(self, x):
        return torch.linalg.norm(self.u(x)) ** self.p / self.p

    def grad(self, x):
        u = self.u(x)
        return torch.linalg.norm(u) ** (self.p - 2) * (self.A.T @ u)

    def hess(self, x):
        return Hs.gauss_newton(self.A, self.u(x), self.p, fisher=True)  # exact for linear u

    def approx_hess(self, x):
        return Hs.fisher_rank_one(self.A, self.u(x), self.p)
