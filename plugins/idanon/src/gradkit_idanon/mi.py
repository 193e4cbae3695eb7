"""Mutual-information estimators for the independence of z_id and z_attr (pluggable: CLUB, HSIC).

* **CLUB** (Cheng et al., 2020): a variational Gaussian q_theta(y | x) fitted by maximum likelihood;
  the upper bound  I_CLUB = mean_i log q(y_i|x_i) - mean_{i,j} log q(y_j|x_i).
* **HSIC** (Gretton et al., 2005), biased estimator with Gaussian kernels and the median heuristic:
  HSIC = tr(K H L H) / (n-1)^2.  It is a dependence measure (zero iff independent for
  characteristic kernels), not an MI value; both are used as a penalty to minimise.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._checks import check_tensor

METHODS = ("club", "hsic")


def _pair(x, y):
    check_tensor(x, "z_id", ndim=2)
    check_tensor(y, "z_attr", ndim=2)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"z_id and z_attr need the same batch size, got {x.shape[0]} and {y.shape[0]}")
    if x.shape[0] < 2:
        raise ValueError("an MI estimate needs at least 2 samples")


class CLUB(nn.Module):
    """Variational q(y|x) = N(mu(x), diag exp(logvar(x))) and the CLUB upper bound on I(x; y)."""

    def __init__(self, x_dim: int, y_dim: int, hidden: int = 64):
        super().__init__()
        self.x_dim, self.y_dim = x_dim, y_dim
        self.mu = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim))
        self.logvar = nn.Sequential(nn.Linear(x_dim, hidden), nn.ReLU(), nn.Linear(hidden, y_dim), nn.Tanh())

    def _check(self, x, y):
        _pair(x, y)
        if x.shape[1] != self.x_dim or y.shape[1] != self.y_dim:
            raise ValueError(f"CLUB built for dims ({self.x_dim}, {self.y_dim}), got ({x.shape[1]}, {y.shape[1]})")

    def log_likelihood(self, x, y):
        self._check(x, y)
        mu, lv = self.mu(x), 5.0 * self.logvar(x)
        return (-0.5 * (y - mu) ** 2 / lv.exp() - 0.5 * lv).sum(1).mean()

    def learning_loss(self, x, y):
        """Negative log-likelihood of q; minimise it (on detached codes) to fit q."""
        return -self.log_likelihood(x, y)

    def forward(self, x, y):
        self._check(x, y)
        mu, lv = self.mu(x), 5.0 * self.logvar(x)
        var = lv.exp()
        pos = (-0.5 * (y - mu) ** 2 / var).sum(1)  # (n,)
        # all pairs: log q(y_j | x_i)
        neg = (-0.5 * (y[None, :, :] - mu[:, None, :]) ** 2 / var[:, None, :]).sum(2).mean(1)
        return (pos - neg).mean()


def _gauss_gram(x):
    d = torch.cdist(x, x) ** 2
    with torch.no_grad():
        med = d[d > 0].median() if (d > 0).any() else torch.tensor(1.0, dtype=x.dtype)
    return torch.exp(-d / med.clamp_min(1e-12))


def hsic(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased HSIC with Gaussian kernels (median-heuristic bandwidth); differentiable in x and y."""
    _pair(x, y)
    n = x.shape[0]
    K, L = _gauss_gram(x), _gauss_gram(y)
    H = torch.eye(n, dtype=x.dtype) - 1.0 / n
    return torch.trace(K @ H @ L @ H) / (n - 1) ** 2


def mi_penalty(z_id: torch.Tensor, z_attr: torch.Tensor, method: str = "club", club: CLUB | None = None) -> torch.Tensor:
    """I-hat(z_id; z_attr) by ``method``; z_attr is flattened. CLUB needs its fitted ``club`` module."""
    if method not in METHODS:
        raise ValueError(f"unknown MI estimator {method!r}; expected one of {METHODS}")
    z_attr = z_attr.reshape(z_attr.shape[0], -1)
    if method == "hsic":
        return hsic(z_id, z_attr)
    if club is None:
        raise ValueError("method='club' needs a fitted CLUB module (club=...)")
    return club(z_id, z_attr)
