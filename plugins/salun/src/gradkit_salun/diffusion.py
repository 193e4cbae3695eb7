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

from gradkit_core.unlearning import planned_steps, run_record

from .unlearn import (Mask, _rng_devices, check_batch, check_budget, check_data, check_finite, check_nonempty,
                      check_seed, restore_masked, saliency_mask)


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
    """SalUn for a class-conditional eps-model ``model(x_t, t, c)`` (with ``model.num_classes``).

    ``unlearn(forget, retain=None, *, epochs=None, max_steps=None, seed=None)`` (the gradkit
    unlearner convention): batches ``(x0, class)``; forget batches hold the class(es) to forget.
    One step takes the next forget batch (and the next retain batch); an epoch is one pass over
    the forget batches; the default budget is ``max_steps=500`` (the official 1000-iteration
    budget scaled to the tiny model).  ``ratio=1.0`` disables the mask (random-label baseline);
    ``objective="ga"`` is gradient ascent on the forget eps-MSE and uses no retain data.
    ``last_run`` reports ``steps``, ``epochs`` and ``stopped_by``; NaN/inf images, classes outside
    ``[0, num_classes)`` and a non-finite loss raise ``ValueError`` and leave the model as it was.
    """

    def __init__(self, model: nn.Module, *, schedule: Optional[Schedule] = None, ratio: float = 0.5,
                 alpha: float = 1.0, lr: float = 1e-4, clip: float = 1.0, objective: str = "salun",
                 seed: Optional[int] = None, mask: Optional[Mask] = None, epochs: Optional[int] = None,
                 max_steps: Optional[int] = None):
        if not isinstance(model, nn.Module) or not hasattr(model, "num_classes"):
            raise TypeError("SalUnDiffusion needs a class-conditional nn.Module eps-model with a num_classes "
                            "attribute, called as model(x_t, t, c)")
        if objective not in ("salun", "ga"):
            raise ValueError(f"objective must be 'salun' or 'ga', got {objective!r}")
        self.model, self.sched = model, schedule or Schedule()
        self.ratio = check_finite("ratio", ratio, high=1.0)
        self.alpha = check_finite("alpha", alpha)
        self.lr = check_finite("lr", lr, low_open=True)
        self.clip = check_finite("clip", clip, low_open=True)
        self.objective, self.seed, self.mask = objective, check_seed(seed), mask
        epochs, max_steps = check_budget(epochs, max_steps)
        if epochs is None and max_steps is None:
            max_steps = 500
        self.epochs, self.max_steps = epochs, max_steps
        self.last_run: Optional[dict] = None

    @property
    def uses_retain(self) -> bool:
        return self.objective == "salun" and self.alpha > 0

    def _mask(self, forget, gen) -> Mask:
        if self.ratio >= 1.0:
            return {n: torch.ones_like(p) for n, p in self.model.named_parameters()}

        # gradient of the eps-MSE on D_f (fixed noise draws from a seeded generator)
        params = dict(self.model.named_parameters())
        acc = {n: torch.zeros_like(p) for n, p in params.items()}
        for batch in forget:
            x, c = check_batch(batch, "forget", self.model.num_classes)
            loss = eps_loss(self.model, self.sched, x, c, gen)
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for n, g in zip(params, grads):
                if g is not None:
                    acc[n] += g
        return saliency_mask(self.model, None, ratio=self.ratio, gradients={n: g.abs() for n, g in acc.items()})

    def unlearn(self, forget: Iterable, retain: Optional[Iterable] = None, *, epochs: Optional[int] = None,
                max_steps: Optional[int] = None, seed: Optional[int] = None) -> nn.Module:
        epochs, max_steps = check_budget(epochs, max_steps)
        if epochs is None and max_steps is None:
            epochs, max_steps = self.epochs, self.max_steps
        seed = check_seed(seed)
        seed = self.seed if seed is None else seed
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        forget = check_data(forget, "forget")
        if retain is not None:
            retain = check_data(retain, "retain")
        elif self.uses_retain:
            raise ValueError("SalUn for diffusion trains on the retain set (alpha > 0): pass retain=... "
                             "(or alpha=0 / objective='ga')")
        check_nonempty(forget, "forget")
        C = self.model.num_classes
        with torch.random.fork_rng(devices=_rng_devices(self.model)):
            torch.manual_seed(seed)
            f_batches = [b for b in forget if len(check_batch(b, "forget", C)[0])]
            r_batches = [b for b in retain if len(check_batch(b, "retain", C)[0])] if retain is not None else []
            if self.uses_retain and not r_batches:
                raise ValueError("the retain set is empty: SalUn for diffusion (alpha > 0) needs retain examples")
            spe = len(f_batches)
            total = planned_steps(epochs, max_steps, spe)
            snapshot = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            mask0 = self.mask
            try:
                self._loop(f_batches, r_batches, total, seed)
            except BaseException:
                with torch.no_grad():
                    self.model.load_state_dict(snapshot)
                self.mask = mask0
                raise
        self.last_run = run_record(total, spe, seed=seed, epochs=epochs, max_steps=max_steps)
        return self.model.eval()

    def _loop(self, f_batches, r_batches, total: int, seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        if self.mask is None:
            self.mask = self._mask(f_batches, gen)
        theta0 = {n: p.detach().clone() for n, p in self.model.named_parameters()}
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self.model.train()
        C = self.model.num_classes
        for it in range(total):
            xf, cf = check_batch(f_batches[it % len(f_batches)], "forget", C)
            if self.objective == "ga":
                loss = -eps_loss(self.model, self.sched, xf, cf, gen)
            else:
                loss = salun_forget_loss(self.model, self.sched, xf, cf, gen, C)
                if self.alpha > 0:
                    xr, cr = check_batch(r_batches[it % len(r_batches)], "retain", C)
                    loss = loss + self.alpha * eps_loss(self.model, self.sched, xr, cr, gen)
            if not bool(torch.isfinite(loss.detach())):
                raise ValueError(f"the unlearning loss became non-finite at step {it + 1}; lower lr (lr={self.lr})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            for n, p in self.model.named_parameters():
                if p.grad is not None:
                    p.grad.mul_(self.mask[n])
            opt.step()
            restore_masked(self.model, self.mask, theta0, opt)
        for n, p in self.model.named_parameters():
            if not bool(torch.isfinite(p).all()):
                raise ValueError(f"parameter {n} became non-finite during unlearning; lower lr (lr={self.lr})")
