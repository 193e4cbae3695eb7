"""Test models: an analytic Gaussian-mixture denoiser (ground truth) and a small EDM-preconditioned MLP.

For a mixture p(x0) = sum_k pi_k N(mu_k, s^2 I) and x_t = alpha x0 + sigma eps, the exact posterior mean is
E[x0 | x_t] = sum_k w_k(x_t) (mu_k + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu_k)),
w_k proportional to pi_k N(x_t; alpha mu_k, (alpha^2 s^2 + sigma^2) I).  That is the exact data predictor of the
probability-flow ODE, so sampler error can be measured without a learned model in the way.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from .schedules import EDMSchedule


class GaussianMixture:
    """Isotropic Gaussian mixture with an exact denoiser.  ``model = gm.denoiser(schedule)`` is a data predictor."""

    def __init__(self, means, std: float, weights=None):
        self.means = torch.as_tensor(means, dtype=torch.float64)
        if self.means.dim() != 2:
            raise ValueError(f"means must have shape (K, D), got {tuple(self.means.shape)}")
        if std <= 0:
            raise ValueError(f"std must be > 0, got {std}")
        self.std = float(std)
        k = self.means.shape[0]
        w = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else \
            torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (k,) or (w < 0).any() or abs(float(w.sum()) - 1) > 1e-6:
            raise ValueError("weights must be K non-negative numbers summing to 1")
        self.weights = w

    @classmethod
    def ring(cls, n: int = 8, radius: float = 1.0, std: float = 0.1):
        ang = torch.arange(n, dtype=torch.float64) * 2 * math.pi / n
        return cls(torch.stack([radius * torch.cos(ang), radius * torch.sin(ang)], 1), std)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        noise = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[idx] + self.std * noise).float()

    def posterior_mean(self, x: torch.Tensor, alpha, sigma) -> torch.Tensor:
        x64 = x.double()
        alpha = torch.as_tensor(alpha, dtype=torch.float64).reshape(-1, 1)
        sigma = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1)
        var = alpha ** 2 * self.std ** 2 + sigma ** 2  # (B, 1)
        diff = x64[:, None, :] - alpha[:, :, None] * self.means[None]  # (B, K, D)
        logits = torch.log(self.weights)[None] - 0.5 * (diff ** 2).sum(-1) / var  # (B, K)
        w = torch.softmax(logits, dim=1)
        comp = self.means[None] + (alpha * self.std ** 2 / var)[:, :, None] * diff
        return (w[:, :, None] * comp).sum(1).to(x.dtype)

    def denoiser(self, schedule=None):
        """Data predictor model(x, t) for ``schedule`` (default EDM, where t = sigma)."""
        schedule = EDMSchedule() if schedule is None else schedule

        def model(x, t):
            t64 = t.double()
            return self.posterior_mean(x, schedule.alpha(t64), schedule.sigma(t64))

        return model

    def exact_ode_gaussian(self, x_T: torch.Tensor, sigma_from: float, sigma_to: float) -> torch.Tensor:
        """Exact EDM probability-flow ODE map for a single Gaussian (K = 1):
        x(sigma') = mu + (x(sigma) - mu) sqrt((s^2 + sigma'^2) / (s^2 + sigma^2))."""
        if self.means.shape[0] != 1:
            raise ValueError("the closed-form ODE map needs a single Gaussian (K = 1)")
        mu = self.means[0].to(x_T.dtype)
        return mu + (x_T - mu) * math.sqrt((self.std ** 2 + sigma_to ** 2) / (self.std ** 2 + sigma_from ** 2))


class FourierMLP(nn.Module):
    """MLP F(x, c_noise) with a Fourier embedding of c_noise = ln(sigma) / 4."""

    def __init__(self, dim: int = 2, hidden: int = 256, depth: int = 3, n_freq: int = 16):
        super().__init__()
        self.register_buffer("freqs", torch.randn(n_freq) * 4.0, persistent=True)
        layers, d = [], dim + 2 * n_freq
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        layers.append(nn.Linear(d, dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x, c_noise):
        ang = c_noise[:, None] * self.freqs[None] * 2 * math.pi
        return self.net(torch.cat([x, torch.sin(ang), torch.cos(ang)], 1))


class EDMDenoiser(nn.Module):
    """EDM preconditioning (Karras et al. 2022): D(x, sigma) = c_skip x + c_out F(c_in x, ln(sigma)/4),
    c_skip = sd^2/(sigma^2+sd^2), c_out = sigma sd / sqrt(sigma^2+sd^2), c_in = 1/sqrt(sigma^2+sd^2).
    Called as a data predictor ``D(x, t)`` with t = sigma (EDMSchedule)."""

    def __init__(self, net: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.net, self.sigma_data = net, float(sigma_data)

    def forward(self, x, sigma):
        sigma = sigma.to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / torch.sqrt(sigma ** 2 + sd2)
        c_in = 1 / torch.sqrt(sigma ** 2 + sd2)
        return c_skip * x + c_out * self.net(c_in * x, torch.log(sigma.flatten()) / 4)


def train_edm(denoiser: EDMDenoiser, sample_data, steps: int = 3000, batch: int = 512, lr: float = 2e-3,
              p_mean: float = -1.2, p_std: float = 1.2, seed: int = 0, progress=None) -> list:
    """EDM training: ln sigma ~ N(p_mean, p_std^2), loss weight (sigma^2 + sd^2) / (sigma sd)^2, Adam, cosine lr.
    ``sample_data(n, generator)`` draws fresh training data each step.  Returns the loss history."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(denoiser.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    sd = denoiser.sigma_data
    losses = []
    it = range(steps) if progress is None else progress(range(steps))
    for _ in it:
        x0 = sample_data(batch, gen)
        sigma = torch.exp(p_mean + p_std * torch.randn(batch, generator=gen))
        noise = torch.randn(x0.shape, generator=gen)
        weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
        pred = denoiser(x0 + sigma[:, None] * noise, sigma)
        loss = (weight[:, None] * (pred - x0) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_proj: int = 500, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two equal-size point clouds (random unit directions, sorted
    projections = exact 1-D W2)."""
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"need two (N, D) clouds of equal shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_proj, generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    px, _ = torch.sort(x.double() @ dirs, 0)
    py, _ = torch.sort(y.double() @ dirs, 0)
    return float(((px - py) ** 2).mean().sqrt())


def mmd_rbf(x: torch.Tensor, y: torch.Tensor, bandwidth: Optional[float] = None) -> float:
    """Biased RBF-kernel MMD^2 with the median-heuristic bandwidth (on the pooled sample)."""
    x, y = x.double(), y.double()
    z = torch.cat([x, y])
    d2 = torch.cdist(z, z) ** 2
    if bandwidth is None:
        bandwidth = float(d2[d2 > 0].median().sqrt())
    k = torch.exp(-d2 / (2 * bandwidth ** 2))
    n = x.shape[0]
    return float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean())


def reconstruction_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean per-sample squared error to the reference ODE solution from the same noise."""
    return float(((x.double() - ref.double()) ** 2).flatten(1).sum(1).mean())
