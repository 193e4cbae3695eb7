"""The cone model of the paper's Table 4 and its two variational families.

Model: x, y ~ N(0, 10²); z ~ N(x² + y², 0.1 + (x² + y²)/100) (the second argument a standard
deviation), observed z = 5.  Mean-field guide: x ~ N(μ₁, e^{ℓ₁}), y ~ N(μ₂, e^{ℓ₂}).
Expressive guide: u ~ U(0, 1), θ = 2πu, x ~ N(√z cos θ, e^{s₁}), y ~ N(√z sin θ, e^{s₂}), and its
marginal over (x, y).
"""

from __future__ import annotations

import math

import torch

from .adev import normal_reparam, uniform

Z_OBS = 5.0


def _normal_lp(v, mu, sd):
    return -0.5 * ((v - mu) / sd) ** 2 - torch.log(sd) - 0.5 * math.log(2 * math.pi)


def model_logpdf(choices, z_obs: float = Z_OBS):
    x, y = choices["x"], choices["y"]
    rs = x ** 2 + y ** 2
    ten = torch.tensor(10.0, dtype=x.dtype)
    return (_normal_lp(x, 0.0, ten) + _normal_lp(y, 0.0, ten)
            + _normal_lp(torch.as_tensor(z_obs, dtype=x.dtype), rs, 0.1 + rs / 100.0))


def meanfield_guide(ctx, phi, particles: int = 1):
    """phi = (μ₁, μ₂, log σ₁, log σ₂); ``particles`` independent draws (particle shape (particles,))."""
    mu = phi[:2].unsqueeze(0).expand(particles, 2)
    sd = phi[2:].exp().unsqueeze(0).expand(particles, 2)
    x = ctx.sample(normal_reparam, mu[:, 0], sd[:, 0], name="x")
    y = ctx.sample(normal_reparam, mu[:, 1], sd[:, 1], name="y")
    return x, y


def expressive_guide(ctx, s, particles: int = 1, z_obs: float = Z_OBS):
    """s = (s₁, s₂) log standard deviations."""
    zero = torch.zeros(particles, dtype=s.dtype)
    u = ctx.sample(uniform, zero, zero + 1.0, name="u")
    theta = 2 * math.pi * u
    r = math.sqrt(z_obs)
    x = ctx.sample(normal_reparam, r * torch.cos(theta), s[0].exp().expand(particles), name="x")
    y = ctx.sample(normal_reparam, r * torch.sin(theta), s[1].exp().expand(particles), name="y")
    return x, y
