"""A small conditional diffusion model G(x | z_id, z_attr): the anonymizer's default generator.

DDPM (Ho et al., 2020) in pixel space on the 32x32 faces (scaled to [-1, 1]) with ``T`` steps
(default 100) and a linear beta schedule from ``beta_start * 1000 / T`` to ``beta_end * 1000 / T``
(the usual 1e-4 .. 0.02 of T = 1000, stretched to fewer steps)::

    q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I),   abar_t = prod_{s <= t} (1 - beta_s)
    L_simple     = E_{t, eps} || eps - eps_theta(sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, t, c) ||^2
    p step       x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps_theta) / sqrt(alpha_t) + sigma_t z,
                 sigma_t^2 = beta_t (1 - abar_{t-1}) / (1 - abar_t)   (the posterior variance)
    DDIM step    x0_hat = (x_t - sqrt(1 - abar_t) eps_theta) / sqrt(abar_t);
                 x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps_theta            (eta = 0)

Indices t run 1..T (abar_0 = 1). Conditioning c = (z_id, z_attr): the identity code goes through an
MLP together with a sinusoidal time embedding into FiLM (scale, shift) of every block; the spatial
attribute map (C x 8 x 8) is concatenated as channels at the 8x8 level and, upsampled, at the input.

**Few-step inference.** The paper distils its latent diffusion model to an LCM; here deterministic
DDIM sampling with few steps (``steps``, default 10) on a fixed noise seed is the stand-in (no
distillation).

**Privacy guidance** (:func:`ConditionalDiffusion.sample`, ``guide=``): at each DDIM step the gradient of
a loss on x0_hat with respect to x_t (through the denoiser) is subtracted from x_t before the step,
scaled by ``guide_scale``; with the privacy hinge as loss this gradient is exactly zero for samples
that are already below every threshold, so guidance only acts where identity is still recognisable.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_float, check_images, check_int, check_tensor


class DDPMSchedule:
    """Linear-beta DDPM schedule with the closed forms above (float64 buffers, cast on use)."""

    def __init__(self, T: int = 100, beta_start: float = 1e-4, beta_end: float = 0.02):
        self.T = check_int(T, "T", low=2)
        b0 = check_float(beta_start, "beta_start", low=0.0, low_open=True)
        b1 = check_float(beta_end, "beta_end", low=0.0, low_open=True)
        if b1 < b0:
            raise ValueError(f"beta_end ({b1}) must be >= beta_start ({b0})")
        scale = 1000.0 / self.T
        betas = torch.linspace(b0 * scale, b1 * scale, self.T, dtype=torch.float64)
        if float(betas.max()) >= 1.0:
            raise ValueError(f"beta_end * 1000 / T = {float(betas.max()):.3g} must be < 1; use a smaller beta_end or more steps T")
        # index 0 is t = 0 (no noise): betas[0] = 0, abar[0] = 1
        self.betas = torch.cat([torch.zeros(1, dtype=torch.float64), betas])
        self.alphas = 1.0 - self.betas
        self.abar = torch.cumprod(self.alphas, 0)

    def _t(self, t, n):
        if not isinstance(t, torch.Tensor):
            t = torch.full((n,), int(t), dtype=torch.long)
        if t.dtype != torch.long or t.shape != (n,):
            raise ValueError(f"t must be an int or a long tensor of shape ({n},), got {getattr(t, 'dtype', type(t))} {tuple(t.shape)}")
        if int(t.min()) < 0 or int(t.max()) > self.T:
            raise ValueError(f"t must lie in 0..{self.T}, got range {int(t.min())}..{int(t.max())}")
        return t

    def _at(self, v, t, x):
        return v[t].to(x.dtype).view(-1, *([1] * (x.dim() - 1)))

    def q_sample(self, x0: torch.Tensor, t, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps."""
        t = self._t(t, x0.shape[0])
        if eps.shape != x0.shape:
            raise ValueError(f"eps must have the shape of x0 {tuple(x0.shape)}, got {tuple(eps.shape)}")
        return self._at(self.abar.sqrt(), t, x0) * x0 + self._at((1 - self.abar).sqrt(), t, x0) * eps

    def p_step(self, x_t: torch.Tensor, t, eps_hat: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """One ancestral DDPM reverse step x_t -> x_{t-1} (t >= 1) with the posterior variance; at t = 1 no noise."""
        t = self._t(t, x_t.shape[0])
        if int(t.min()) < 1:
            raise ValueError("p_step needs t >= 1")
        a, ab, ab_prev, b = (self._at(v, t, x_t) for v in (self.alphas, self.abar, self.abar, self.betas))
        ab_prev = self._at(self.abar, t - 1, x_t)
        mean = (x_t - b / (1 - ab).sqrt() * eps_hat) / a.sqrt()
        var = b * (1 - ab_prev) / (1 - ab)
        return mean + var.sqrt() * z

    def ddim_step(self, x_t: torch.Tensor, t: int, s: int, eps_hat: torch.Tensor):
        """Deterministic DDIM (eta = 0) jump x_t -> x_s (s < t); returns (x_s, x0_hat)."""
        if not 0 <= s < t <= self.T:
            raise ValueError(f"ddim_step needs 0 <= s < t <= T={self.T}, got s={s}, t={t}")
        ab_t, ab_s = float(self.abar[t]), float(self.abar[s])
        x0 = (x_t - math.sqrt(1 - ab_t) * eps_hat) / math.sqrt(ab_t)
        return math.sqrt(ab_s) * x0 + math.sqrt(1 - ab_s) * eps_hat, x0

    def timesteps(self, steps: int):
        """``steps`` evenly spaced indices T = t_1 > ... > t_k >= 1 for DDIM (then a final jump to 0)."""
        check_int(steps, "steps")
        if steps > self.T:
            raise ValueError(f"steps={steps} exceeds T={self.T}")
        return [int(v) for v in np.unique(np.round(np.linspace(1, self.T, steps)).astype(int))[::-1]]


def _time_embedding(t: torch.Tensor, dim: int, T: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(1000.0) * torch.arange(half, dtype=torch.float32) / half)
    ang = (t.float() / T * 1000.0)[:, None] * freqs[None] / 10.0
    return torch.cat([ang.sin(), ang.cos()], 1)


class _Block(nn.Module):
    def __init__(self, c_in, c_out, emb):
        super().__init__()
        self.c1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.c2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.film = nn.Linear(emb, 2 * c_out)
        self.n1 = nn.GroupNorm(8, c_out)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, h, e):
        s, b = self.film(e)[:, :, None, None].chunk(2, 1)
        y = F.silu(self.n1(self.c1(h)) * (1 + s) + b)
        return self.skip(h) + self.c2(y)


class CondDenoiser(nn.Module):
    """eps_theta(x_t, t, z_id, z_attr): a two-level U-Net (32 -> 16 -> 8) with FiLM-conditioned residual blocks
    at 16x16 and 8x8 (plain convolutions at 32x32, to keep CPU cost low)."""

    def __init__(self, *, id_dim: int = 16, attr_channels: int = 4, width: int = 16, emb: int = 128, T: int = 100):
        super().__init__()
        for n, v in dict(id_dim=id_dim, attr_channels=attr_channels, width=width, emb=emb, T=T).items():
            check_int(v, n)
        if width % 8:
            raise ValueError(f"width must be a multiple of 8 (GroupNorm), got {width}")
        w, ca = width, attr_channels
        self.id_dim, self.attr_channels, self.T, self.temb = id_dim, ca, T, 32
        self.cond = nn.Sequential(nn.Linear(self.temb + id_dim, emb), nn.SiLU(), nn.Linear(emb, emb), nn.SiLU())
        self.inp = nn.Conv2d(1 + ca, w, 3, padding=1)
        self.down1 = nn.Conv2d(w, 2 * w, 4, 2, 1)
        self.b16 = _Block(2 * w, 2 * w, emb)
        self.down2 = nn.Conv2d(2 * w, 2 * w, 4, 2, 1)
        self.b8 = _Block(2 * w + ca, 2 * w, emb)
        self.up1 = nn.ConvTranspose2d(2 * w, 2 * w, 4, 2, 1)
        self.u16 = _Block(4 * w, 2 * w, emb)
        self.up2 = nn.ConvTranspose2d(2 * w, w, 4, 2, 1)
        self.u32 = nn.Conv2d(2 * w, w, 3, padding=1)
        self.out = nn.Conv2d(w, 1, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x_t, t, z_id, z_attr):
        check_images(x_t, "x_t")
        b = x_t.shape[0]
        check_tensor(z_id, "z_id", ndim=2, shape_tail=(self.id_dim,))
        check_tensor(z_attr, "z_attr", ndim=4, shape_tail=(self.attr_channels, 8, 8))
        if z_id.shape[0] != b or z_attr.shape[0] != b:
            raise ValueError(f"batch sizes differ: x_t {b}, z_id {z_id.shape[0]}, z_attr {z_attr.shape[0]}")
        if not isinstance(t, torch.Tensor) or t.shape != (b,):
            raise ValueError(f"t must be a tensor of shape ({b},)")
        e = self.cond(torch.cat([_time_embedding(t, self.temb, self.T), z_id], 1))
        h32 = F.silu(self.inp(torch.cat([x_t, F.interpolate(z_attr, scale_factor=4, mode="nearest")], 1)))
        h16 = self.b16(self.down1(h32), e)
        h8 = self.b8(torch.cat([self.down2(h16), z_attr], 1), e)
        u16 = self.u16(torch.cat([self.up1(h8), h16], 1), e)
        u32 = self.u32(torch.cat([self.up2(u16), h32], 1))
        return self.out(F.silu(u32))


class ConditionalDiffusion(nn.Module):
    """G(x | z_id, z_attr): the denoiser plus its schedule; images in [0, 1] outside, [-1, 1] inside."""

    def __init__(self, *, id_dim: int = 16, attr_channels: int = 4, width: int = 16, T: int = 100,
                 beta_start: float = 1e-4, beta_end: float = 0.02):
        super().__init__()
        self.schedule = DDPMSchedule(T, beta_start, beta_end)
        self.net = CondDenoiser(id_dim=id_dim, attr_channels=attr_channels, width=width, T=T)
        self.T = T

    def loss(self, x0: torch.Tensor, z_id, z_attr, *, generator=None) -> torch.Tensor:
        """L_simple: ||eps - eps_theta(x_t, t, c)||^2 (mean over pixels and batch), t ~ U{1..T}."""
        check_images(x0, "x0")
        x = 2 * x0 - 1
        t = torch.randint(1, self.T + 1, (x.shape[0],), generator=generator)
        eps = torch.randn(x.shape, generator=generator)
        return F.mse_loss(self.net(self.schedule.q_sample(x, t, eps), t, z_id, z_attr), eps)

    def fit(self, x, z_id, z_attr, *, steps: int = 1000, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
            pair_index=None):
        """Train on faces ``x`` with codes (z_id, z_attr). ``pair_index`` (optional, (N,) long): take the identity
        code of row pair_index[i] (another image of the same identity) for image i, so that the generator cannot
        read the image's attributes off its identity code."""
        check_images(x, "x")
        check_int(steps, "steps", low=0)
        check_int(batch_size, "batch_size")
        n = x.shape[0]
        if z_id.shape[0] != n or z_attr.shape[0] != n:
            raise ValueError(f"codes need one row per image ({n}), got {z_id.shape[0]} and {z_attr.shape[0]}")
        g = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
        self.history = []
        self.train()
        for _ in range(steps):
            b = torch.randint(0, n, (min(batch_size, n),), generator=g)
            zb = z_id[pair_index[b]] if pair_index is not None else z_id[b]
            loss = self.loss(x[b], zb, z_attr[b], generator=g)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            self.history.append(float(loss.detach()))
        self.eval()
        return self

    def sample(self, z_id, z_attr, *, steps: int = 10, generator=None, noise=None, guide=None,
               guide_scale: float = 0.0, guide_steps=None, normalize: bool = False) -> torch.Tensor:
        """Deterministic DDIM sampling in ``steps`` steps from noise (seeded by ``generator``: an int or
        torch.Generator, or given as ``noise``). ``guide(x0_hat in [0, 1]) -> scalar`` with ``guide_scale > 0``
        adds loss guidance (see module docstring) at the last ``guide_steps`` steps (default: all); with
        ``normalize`` each sample's gradient is divided by its root-mean-square (a zero gradient stays zero)."""
        check_tensor(z_id, "z_id", ndim=2)
        check_float(guide_scale, "guide_scale", low=0.0)
        if guide_scale and guide is None:
            raise ValueError("guide_scale > 0 needs a guide function")
        b = z_id.shape[0]
        shape = (b, 1, 32, 32)
        if noise is None:
            g = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(
                0 if generator is None else int(generator))
            noise = torch.randn(shape, generator=g)
        elif noise.shape != shape:
            raise ValueError(f"noise must have shape {shape}, got {tuple(noise.shape)}")
        ts = self.schedule.timesteps(steps)
        n_guided = len(ts) if guide_steps is None else check_int(guide_steps, "guide_steps", low=0)
        x = noise
        for k, t in enumerate(ts):
            s = ts[k + 1] if k + 1 < len(ts) else 0
            tt = torch.full((b,), t, dtype=torch.long)
            if guide_scale and k >= len(ts) - n_guided:
                xg = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    eps = self.net(xg, tt, z_id, z_attr)
                    x0 = (xg - math.sqrt(1 - float(self.schedule.abar[t])) * eps) / math.sqrt(float(self.schedule.abar[t]))
                    lg = guide(((x0.clamp(-1, 1) + 1) / 2))
                    (grad,) = torch.autograd.grad(lg, xg)
                if not torch.isfinite(grad).all():
                    raise ValueError("the guidance loss produced a non-finite gradient")
                if normalize:
                    rms = grad.flatten(1).pow(2).mean(1).sqrt().view(-1, 1, 1, 1)
                    grad = torch.where(rms > 0, grad / rms.clamp_min(1e-30), torch.zeros_like(grad))
                x = (x - guide_scale * grad).detach()
            with torch.no_grad():
                eps = self.net(x, tt, z_id, z_attr)
                x, _ = self.schedule.ddim_step(x, t, s, eps)
        return ((x.clamp(-1, 1) + 1) / 2).detach()
