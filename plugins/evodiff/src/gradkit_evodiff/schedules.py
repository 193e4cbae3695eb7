"""Noise schedules and time grids.

A schedule describes the forward process x_t = alpha(t) * x_0 + sigma(t) * eps.  The samplers only use
``alpha(t)``, ``sigma(t)``, ``lambda_(t) = log(alpha/sigma)`` (half log-SNR), ``inverse_lambda(lam)`` and the
default time range ``t_max`` / ``t_min``.  Any object with these members works (duck typing); ``t`` is a
float tensor.  kappa = sigma / alpha = exp(-lambda).

* :class:`EDMSchedule` - variance exploding / EDM: alpha = 1, sigma = t (t *is* the noise level).
* :class:`VPSchedule` - continuous-time linear variance preserving (DDPM / score-SDE VP):
  log alpha(t) = -(beta_1 - beta_0) t^2 / 4 - beta_0 t / 2, sigma = sqrt(1 - alpha^2).
"""

from __future__ import annotations

import math

import torch


class EDMSchedule:
    """alpha_t = 1, sigma_t = t (Karras et al. 2022).  Time range sigma_max -> sigma_min."""

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        if not (0 < sigma_min < sigma_max):
            raise ValueError(f"EDMSchedule needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.t_min, self.t_max = float(sigma_min), float(sigma_max)

    def alpha(self, t):
        return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def sigma(self, t):
        return torch.as_tensor(t, dtype=torch.float64)

    def lambda_(self, t):
        return -torch.log(torch.as_tensor(t, dtype=torch.float64))

    def inverse_lambda(self, lam):
        return torch.exp(-torch.as_tensor(lam, dtype=torch.float64))

    def __repr__(self):
        return f"EDMSchedule(sigma_min={self.t_min}, sigma_max={self.t_max})"


class VPSchedule:
    """Linear VP SDE schedule (beta_min 0.1, beta_max 20 as in DDPM / DPM-Solver), times in [eps, T]."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0, eps: float = 1e-3):
        if not (0 < eps < T) or beta_max <= beta_min or beta_min < 0:
            raise ValueError("VPSchedule needs 0 < eps < T and 0 <= beta_min < beta_max")
        self.b0, self.b1 = float(beta_min), float(beta_max)
        self.t_min, self.t_max = float(eps), float(T)

    def log_alpha(self, t):
        t = torch.as_tensor(t, dtype=torch.float64)
        return -0.25 * t ** 2 * (self.b1 - self.b0) - 0.5 * t * self.b0

    def alpha(self, t):
        return torch.exp(self.log_alpha(t))

    def sigma(self, t):
        return torch.sqrt(-torch.expm1(2.0 * self.log_alpha(t)))

    def lambda_(self, t):
        la = self.log_alpha(t)
        return la - 0.5 * torch.log(-torch.expm1(2.0 * la))

    def inverse_lambda(self, lam):
        lam = torch.as_tensor(lam, dtype=torch.float64)
        neg_log_alpha = 0.5 * torch.logaddexp(torch.zeros_like(lam), -2.0 * lam)  # L = -log alpha >= 0
        a = 0.25 * (self.b1 - self.b0)
        return (-0.5 * self.b0 + torch.sqrt(0.25 * self.b0 ** 2 + 4 * a * neg_log_alpha)) / (2 * a)

    def __repr__(self):
        return f"VPSchedule(beta_min={self.b0}, beta_max={self.b1}, T={self.t_max}, eps={self.t_min})"


SKIP_TYPES = ("logSNR", "edm", "time_uniform")


def time_grid(schedule, t_max: float, t_min: float, steps: int, skip_type: str = "logSNR", rho: float = 7.0):
    """``steps + 1`` decreasing times from ``t_max`` to ``t_min`` (float64).

    logSNR: uniform in lambda; edm: Karras rho-grid in kappa = sigma/alpha (rho = 7); time_uniform: uniform in t.
    """
    if skip_type not in SKIP_TYPES:
        raise ValueError(f"skip_type must be one of {SKIP_TYPES}, got {skip_type!r}")
    if steps < 1:
        raise ValueError(f"need at least one step, got {steps}")
    t_max_t = torch.tensor(float(t_max), dtype=torch.float64)
    t_min_t = torch.tensor(float(t_min), dtype=torch.float64)
    if skip_type == "logSNR":
        lams = torch.linspace(float(schedule.lambda_(t_max_t)), float(schedule.lambda_(t_min_t)), steps + 1,
                              dtype=torch.float64)
        ts = schedule.inverse_lambda(lams)
    elif skip_type == "edm":
        k_max = math.exp(-float(schedule.lambda_(t_max_t)))
        k_min = math.exp(-float(schedule.lambda_(t_min_t)))
        ramp = torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        kappas = (k_max ** (1 / rho) + ramp * (k_min ** (1 / rho) - k_max ** (1 / rho))) ** rho
        ts = schedule.inverse_lambda(-torch.log(kappas))
    else:
        ts = torch.linspace(float(t_max), float(t_min), steps + 1, dtype=torch.float64)
    ts[0], ts[-1] = float(t_max), float(t_min)  # exact end points (inverse_lambda round trip)
    return ts
