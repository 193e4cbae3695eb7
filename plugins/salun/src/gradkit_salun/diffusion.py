"""SalUn for class-conditional diffusion models (paper Sec. 4, "SalUn for image generation").

Forgetting objective for a class-conditional DDPM ε_θ(x_t, t, c) with classifier-free
guidance (official ``DDPM/runners/diffusion.py::saliency_unlearn``):

    ℓ_f = ‖ε_θ(x_t, t, c_f) - stopgrad ε_θ(x_t, t, c')‖²,   c' = (c_f + 1) mod C
    total = ℓ_f + α · ‖ε - ε_θ(x_t, t, c_r)‖²   (standard ε-MSE on retain data)

gradients clipped to norm 1, multiplied by the saliency mask (top ``ratio`` of
``|∇_θ ε-MSE(D_f)|``, one global ranking), Adam lr 1e-4; masked-out weights are kept
at θ_o.  With ``ratio=1`` (no mask) this is the random-label baseline; ``GA`` maximises
the ε-MSE on D_f.  A tiny MLP noise model and a linear-β DDPM schedule are included
for the CPU-scale experiment (``gradkit_salun.reproduce_diffusion``).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .unlearn import Mask, check_batch, check_data, check_nonempty, restore_masked, saliency_mask


class Schedule:
    """Linear-β DDPM schedule with ``T`` steps."""

    def __init__(self, T: int = 200, beta_start: float = 1e-4, beta_end: float = 0.02):
        if T < 2:
            raise ValueError(f"T must be >= 2, got {T}")
        self.T = T
        self.betas = torch.linspace(beta_start, beta_end, T)
        self.alphas = 1 - self.betas
        self.abar = torch.cumprod(self.alphas, 0)

    def q_sample(self, x0, t, noise):
        a = self.abar[t].view(-1, *([1] * (x0.dim() - 1)))
        return a.sqrt() * x0 + (1 - a).sqrt() * noise


class TinyCondEps(nn.Module):
    """ε_θ(x_t, t, c) for flattened small images: an MLP on [x, time embedding, class embedding].

    Class index ``num_classes`` is the null (unconditional) token for classifier-free guidance.
    """

    def __init__(self, dim: int = 64, num_classes: int = 10, hidden: int = 256, emb: int = 64):
        super().__init__()
        self.dim, self.num_classes, self.emb = dim, num_classes, emb
        self.cls = nn.Embedding(num_classes + 1, emb)
        self.net = nn.Sequential(nn.Linear(dim + 2 * emb, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, dim))

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        half = self.emb // 2
        freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
        a = t.float()[:, None] * freqs[None]
        return torch.cat([a.sin(), a.cos()], 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        h = torch.cat([x.flatten(1), self.time_embedding(t), self.cls(c)], 1)
        return self.net(h).view(shape)


def eps_loss(model: nn.Module, sched: Schedule, x0: torch.Tensor, c: torch.Tensor, gen: torch.Generator,
             p_uncond: float = 0.0) -> torch.Tensor:
    """Standard ε-prediction MSE (with label dropout ``p_uncond`` for classifier-free guidance)."""
    t = torch.randint(0, sched.T, (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    if p_uncond > 0:
        drop = torch.rand(len(c), generator=gen) < p_uncond
        c = torch.where(drop, torch.full_like(c, model.num_classes), c)
    return F.mse_loss(model(sched.q_sample(x0, t, noise), t, c), noise)


def salun_forget_loss(model: nn.Module, sched: Schedule, x0: torch.Tensor, c_forget: torch.Tensor,
                      gen: torch.Generator, num_classes: int) -> torch.Tensor:
    """``‖ε_θ(x_t, t, c_f) - stopgrad ε_θ(x_t, t, (c_f + 1) mod C)‖²``: map the forgotten class to another."""
    t = torch.randint(0, sched.T, (len(x0),), generator=gen)
    noise = torch.randn(x0.shape, generator=gen)
    xt = sched.q_sample(x0, t, noise)
    with torch.no_grad():
        target = model(xt, t, (c_forget + 1) % num_classes)
    return F.mse_loss(model(xt, t, c_forget), target)


def train_ddpm(model: nn.Module, sched: Schedule, x: torch.Tensor, c: torch.Tensor, *, steps: int = 3000,
               batch_size: int = 128, lr: float = 2e-3, p_uncond: float = 0.1, seed: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch_size,), generator=gen)
        loss = eps_loss(model, sched, x[idx], c[idx], gen, p_uncond)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_sched.step()
    return model.eval()


@torch.no_grad()
def sample(model: nn.Module, sched: Schedule, c: torch.Tensor, shape, *, guidance: float = 2.0, seed: int = 0
           ) -> torch.Tensor:
    """Ancestral DDPM sampling with classifier-free guidance ε = (1 + w) ε(c) - w ε(∅)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((len(c), *shape), generator=gen)
    null = torch.full_like(c, model.num_classes)
    model.eval()
    for i in reversed(range(sched.T)):
        t = torch.full((len(c),), i, dtype=torch.long)
        eps = (1 + guidance) * model(x, t, c) - guidance * model(x, t, null)
        a, ab, b = sched.alphas[i], sched.abar[i], sched.betas[i]
        mean = (x - b / (1 - ab).sqrt() * eps) / a.sqrt()
        x = mean + (b.sqrt() * torch.randn(x.shape, generator=gen) if i > 0 else 0.0)
    return x


class SalUnDiffusion:
    """SalUn for a class-conditional ε-model ``model(x_t, t, c)`` (with ``model.num_classes``).

    ``unlearn(forget, retain, iterations=500)``: batches ``(x0, class)``; forget
    batches hold the class(es) to forget.  ``ratio=1.0`` disables the mask
    (random-label baseline); ``objective="ga"`` is gradient ascent on the forget ε-MSE.
    """

    def __init__(self, model: nn.Module, *, schedule: Optional[Schedule] = None, ratio: float = 0.5,
                 alpha: float = 1.0, lr: float = 1e-4, clip: float = 1.0, objective: str = "salun", seed: int = 0,
                 mask: Optional[Mask] = None):
        if not isinstance(model, nn.Module) or not hasattr(model, "num_classes"):
            raise TypeError("SalUnDiffusion needs a class-conditional nn.Module eps-model with a num_classes "
                            "attribute, called as model(x_t, t, c)")
        if objective not in ("salun", "ga"):
            raise ValueError(f"objective must be 'salun' or 'ga', got {objective!r}")
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratio must be a fraction in [0, 1], got {ratio!r}")
        self.model, self.sched = model, schedule or Schedule()
        self.ratio, self.alpha, self.lr, self.clip = float(ratio), float(alpha), float(lr), float(clip)
        self.objective, self.seed, self.mask = objective, int(seed), mask

    def _mask(self, forget, gen) -> Mask:
        if self.ratio >= 1.0:
            return {n: torch.ones_like(p) for n, p in self.model.named_parameters()}

        # gradient of the ε-MSE on D_f (fixed noise draws from a seeded generator)
        params = dict(self.model.named_parameters())
        acc = {n: torch.zeros_like(p) for n, p in params.items()}
        for batch in forget:
            x, c = check_batch(batch, "forget")
            loss = eps_loss(self.model, self.sched, x, c, gen)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    acc[n] += g
        return saliency_mask(self.model, None, ratio=self.ratio, gradients={n: g.abs() for n, g in acc.items()})

    def unlearn(self, forget: Iterable, retain: Iterable, iterations: int = 500) -> nn.Module:
        forget, retain = check_data(forget, "forget"), check_data(retain, "retain")
        check_nonempty(forget, "forget")
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        gen = torch.Generator().manual_seed(self.seed)
        if self.mask is None:
            self.mask = self._mask(forget, gen)
        theta0 = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        f_batches, r_batches = list(forget), list(retain)
        self.model.train()
        C = self.model.num_classes
        for it in range(iterations):
            xf, cf = check_batch(f_batches[it % len(f_batches)], "forget")
            if self.objective == "ga":
                loss = -eps_loss(self.model, self.sched, xf, cf, gen)
            else:
                loss = salun_forget_loss(self.model, self.sched, xf, cf, gen, C)
                if self.alpha > 0 and r_batches:
                    xr, cr = check_batch(r_batches[it % len(r_batches)], "retain")
                    loss = loss + self.alpha * eps_loss(self.model, self.sched, xr, cr, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            for n, p in self.model.named_parameters():
                if p.grad is not None:
                    p.grad.mul_(self.mask[n])
            opt.step()
            restore_masked(self.model, self.mask, theta0, opt)
        return self.model.eval()
