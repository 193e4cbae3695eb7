"""Masked-reconstruction task for the reproduction: generated images, a small conv autoencoder,
L1 and SSIM losses (SSIM in torch: 7x7 Gaussian window, sigma 1.5, valid region)."""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


# ---------------------------------------------------------------------- SSIM
def _gaussian_window(size: int = 7, sigma: float = 1.5, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 7, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    """Mean SSIM of images ``(B, C, H, W)`` (Wang et al., 2004; K1=0.01, K2=0.03), valid-region Gaussian filter."""
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim expects two (B, C, H, W) tensors of equal shape, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    c = x.shape[1]
    w = _gaussian_window(window, sigma, x.dtype).to(x.device).expand(c, 1, window, window)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x = F.conv2d(x, w, groups=c)
    mu_y = F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x ** 2
    syy = F.conv2d(y * y, w, groups=c) - mu_y ** 2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))
    return s.mean()


def l1_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error against channel 0 of ``target`` (the clean image)."""
    return (out - target[:, :1]).abs().mean()


def ssim_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` against the *last* channel of ``target``: the clean image for a one-channel target,
    the SSIM task's own target for the two-channel targets of a conflicting :class:`PatchSampler`."""
    return 1.0 - ssim(out, target[:, -1:])


def contrast_target(clean: torch.Tensor, k: float) -> torch.Tensor:
    """``0.5 + k (x - 0.5)``: the clean image with its contrast about mid-grey scaled by ``k`` (in [0, 1]
    for ``|k| <= 1``).  ``k = 1`` is the clean image; ``k = -1`` is the inverted image ``1 - x``, so an SSIM
    task on it pulls the shared network against an L1 task on the clean image (contradicting targets:
    a controllable gradient conflict)."""
    return 0.5 + k * (clean - 0.5)


# ---------------------------------------------------------------------- data
def generate_images(n: int, size: int = 96, seed: int = 0) -> torch.Tensor:
    """``n`` grayscale images ``(n, size, size)`` in ``[0, 1]``: smooth shading, random ellipses,
    rectangles and strokes, sinusoidal texture and fine noise (seeded, nothing downloaded)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    imgs = []
    for _ in range(n):
        r = lambda *s: torch.rand(s, generator=g)  # noqa: E731
        img = 0.3 + 0.4 * r(1) * (xx * r(1) + yy * r(1))
        for _ in range(int(torch.randint(3, 9, (1,), generator=g))):
            cx, cy, ax, ay = r(1), r(1), 0.05 + 0.25 * r(1), 0.05 + 0.25 * r(1)
            val = r(1)
            kind = int(torch.randint(0, 3, (1,), generator=g))
            if kind == 0:
                m = ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 < 1
            elif kind == 1:
                m = ((xx - cx).abs() < ax) & ((yy - cy).abs() < ay)
            else:
                th = math.pi * float(r(1))
                d = (xx - cx) * math.sin(th) - (yy - cy) * math.cos(th)
                m = d.abs() < 0.01 + 0.02 * r(1)
            img = torch.where(m, 0.5 * img + 0.5 * val, img)
        freq = 4 + 20 * float(r(1))
        th = math.pi * float(r(1))
        img = img + 0.08 * r(1) * torch.sin(2 * math.pi * freq * (xx * math.cos(th) + yy * math.sin(th)))
        img = img + 0.03 * torch.randn(size, size, generator=g)
        imgs.append(img.clamp(0, 1))
    return torch.stack(imgs)


class PatchSampler:
    """Random ``patch x patch`` crops of a fixed image pool, with 50 % of ``cell x cell`` cells masked.

    Calling the sampler returns ``((masked_input_with_mask_channel), target)``, the shape a
    GCond ``data_provider`` returns.  ``target`` is the clean crop ``(B, 1, H, W)``; with
    ``ssim_contrast=k`` it is ``(B, 2, H, W)``: the clean crop (the L1 task's target) and
    :func:`contrast_target` ``(clean, k)`` (the SSIM task's target).
    """

    def __init__(self, images: torch.Tensor, batch: int = 32, patch: int = 32, cell: int = 4,
                 mask_ratio: float = 0.5, seed: int = 0, ssim_contrast: Optional[float] = None):
        if patch % cell:
            raise ValueError(f"patch {patch} must be a multiple of cell {cell}")
        if ssim_contrast is not None and not -1.0 <= float(ssim_contrast) <= 1.0:
            raise ValueError(f"ssim_contrast must be in [-1, 1] (1 = clean target, -1 = inverted image) "
                             f"or None, got {ssim_contrast!r}")
        self.ssim_contrast = None if ssim_contrast is None else float(ssim_contrast)
        self.images, self.batch, self.patch, self.cell, self.mask_ratio = images, batch, patch, cell, mask_ratio
        self.g = torch.Generator().manual_seed(seed)

    def sample(self, n: int) -> Tuple[torch.Tensor, torch.Tensor]:
        N, H, W = self.images.shape
        idx = torch.randint(N, (n,), generator=self.g)
        ys = torch.randint(H - self.patch + 1, (n,), generator=self.g)
        xs = torch.randint(W - self.patch + 1, (n,), generator=self.g)
        clean = torch.stack([self.images[i, y:y + self.patch, x:x + self.patch]
                             for i, y, x in zip(idx.tolist(), ys.tolist(), xs.tolist())])[:, None]
        cells = self.patch // self.cell
        keep = torch.rand(n, cells * cells, generator=self.g).argsort(1) >= int(self.mask_ratio * cells * cells)
        mask = keep.float().view(n, 1, cells, cells)
        mask = mask.repeat_interleave(self.cell, 2).repeat_interleave(self.cell, 3)
        x = torch.cat([clean * mask, mask], 1)
        if self.ssim_contrast is None:
            return x, clean
        return x, torch.cat([clean, contrast_target(clean, self.ssim_contrast)], 1)

    def __call__(self) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.sample(self.batch)


# ---------------------------------------------------------------------- model
class MaskedAutoencoder(nn.Module):
    """Small conv encoder-decoder with GroupNorm (input: masked image + mask channel; output: image in [0, 1]).

    GroupNorm (not BatchNorm) keeps the network well conditioned without batch statistics; without it
    this autoencoder sat on a "predict the mean" plateau for ~100 steps on some seeds."""

    def __init__(self, width: int = 12, groups: int = 4):
        super().__init__()
        w = width

        def block(i, o, **kw):
            return [nn.Conv2d(i, o, 3, padding=1, **kw), nn.GroupNorm(groups, o), nn.GELU()]

        self.enc = nn.Sequential(*block(2, w), *block(w, 2 * w, stride=2), *block(2 * w, 2 * w),
                                 *block(2 * w, 4 * w, stride=2))
        self.dec = nn.Sequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1), nn.GroupNorm(groups, 2 * w), nn.GELU(),
            *block(2 * w, 2 * w),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.GroupNorm(groups, w), nn.GELU(),
            nn.Conv2d(w, 1, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.dec(self.enc(x)))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 256) -> Tuple[float, float]:
    """Validation (L1, 1 - SSIM) averaged over fixed batches."""
    was = model.training
    model.eval()
    l1s, ss = [], []
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch])  # y: one channel (clean) or (clean, SSIM target)
        l1s.append(float(l1_loss(out, y[i:i + batch])))
        ss.append(float(ssim_loss(out, y[i:i + batch])))
    model.train(was)
    return sum(l1s) / len(l1s), sum(ss) / len(ss)
