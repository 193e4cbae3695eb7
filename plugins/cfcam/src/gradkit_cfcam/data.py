"""Experiment data and model for the CF-CAM reproduction (generated offline, seeded).

* :func:`lesion_images`: 64x64 grayscale "lesion" images.  The background is a
  random crop of one of scikit-image's bundled textures (``brick``, ``grass``,
  ``gravel``, downsampled 2x) plus pixel noise; class 1 adds a bright blob or
  ring at a random place.  The lesion's ground-truth mask comes with it.
* :func:`digits32`: scikit-learn's 8x8 digits upsampled to 32x32, with the stroke
  mask (pixels above 0.5) as the object mask.
* :class:`CamCNN`: a 4-block conv net (conv-ReLU, max-pool after the first
  ``pools`` blocks, global average pool, linear); :meth:`CamCNN.cam_layer` is the
  last block's ReLU, the usual CAM target.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

TEXTURES = ("brick", "grass", "gravel")


def _textures():
    import skimage.data as skd

    out = []
    for name in TEXTURES:
        img = getattr(skd, name)().astype(np.float32) / 255.0
        out.append(img)
    return out


def lesion_images(n: int, size: int = 64, seed: int = 0, contrast: float = 0.35
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x, y, masks)``: ``x`` float ``(n, 1, size, size)`` in [0, 1], ``y`` in {0, 1}
    (half each, shuffled), ``masks`` bool ``(n, size, size)`` (empty for class 0)."""
    if n < 1 or size < 16:
        raise ValueError(f"need n >= 1 and size >= 16, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    tex = _textures()
    y = np.array([i % 2 for i in range(n)], dtype=np.int64)
    rng.shuffle(y)
    xs = np.empty((n, size, size), dtype=np.float32)
    ms = np.zeros((n, size, size), dtype=bool)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n):
        t = tex[rng.integers(len(tex))]
        c = 2 * size
        r0, c0 = rng.integers(0, t.shape[0] - c), rng.integers(0, t.shape[1] - c)
        crop = t[r0 : r0 + c, c0 : c0 + c].reshape(size, 2, size, 2).mean(axis=(1, 3))
        crop = (crop - crop.min()) / max(float(crop.max() - crop.min()), 1e-6)
        img = 0.2 + 0.45 * crop + rng.normal(0, 0.04, (size, size)).astype(np.float32)
        if y[i] == 1:
            r = rng.uniform(0.08, 0.15) * size
            cy, cx = rng.uniform(r + 2, size - r - 2, size=2)
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            if rng.random() < 0.5:   # blob
                lesion = np.exp(-0.5 * (d / (0.6 * r)) ** 2)
            else:                    # ring
                lesion = np.exp(-0.5 * ((d - r) / (0.2 * r)) ** 2)
            img = img + contrast * lesion
            ms[i] = lesion > 0.5
        xs[i] = np.clip(img, 0, 1)
    return torch.from_numpy(xs[:, None]), torch.from_numpy(y), torch.from_numpy(ms)


def digits32(seed: int = 0, test_fraction: float = 0.25):
    """``(x_train, y_train, x_test, y_test, masks_test)`` with digits upsampled to 32x32 (bilinear)."""
    from gradkit_support.data import digits

    xtr, ytr, xte, yte = digits(test_fraction=test_fraction, seed=seed)
    up = lambda a: F.interpolate(a, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)  # noqa: E731
    xtr, xte = up(xtr), up(xte)
    return xtr, ytr, xte, yte, xte[:, 0] > 0.5


class CamCNN(nn.Module):
    """conv3x3(-BatchNorm)-ReLU blocks with the given ``widths``; max-pool after the first ``pools``
    blocks; global average pool; linear head."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2, widths: Sequence[int] = (8, 16, 32, 64),
                 pools: int = 3, batch_norm: bool = True):
        super().__init__()
        widths = list(widths)
        if not widths or pools > len(widths) or num_classes < 2:
            raise ValueError(f"bad CamCNN config: widths={widths}, pools={pools}, num_classes={num_classes}")
        layers, c = [], in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=not batch_norm)]
            if batch_norm:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.ReLU())
            if i < pools:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)

    def cam_layer(self, block: int = -1) -> nn.Module:
        """The ReLU of conv block ``block`` (default the last: activations ``(B, widths[-1], h, w)``,
        the usual CAM target; its gradient is ``W_c / hw`` everywhere because GAP + linear follow)."""
        relus = [m for m in self.features if isinstance(m, nn.ReLU)]
        return relus[block]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=(2, 3)))


def train_cnn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 4, lr: float = 3e-3,
              batch_size: int = 32, seed: int = 0) -> list:
    """Adam training with the shared seeded loop; returns per-step losses."""
    from gradkit_support.data import loader
    from gradkit_support.train import train_classifier

    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = train_classifier(model, loader(x, y, batch_size=batch_size, seed=seed, drop_last=True), opt, epochs=epochs)
    recalibrate_batch_norm(model, x)
    model.eval()
    return losses


@torch.no_grad()
def recalibrate_batch_norm(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> None:
    """Replace BatchNorm running statistics by exact averages over ``x`` with the final weights
    (short high-learning-rate runs leave stale running statistics)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    saved = [(m.momentum, m.training) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    for s in range(0, len(x), batch_size):
        model(x[s : s + batch_size])
    for m, (mom, _) in zip(bns, saved):
        m.momentum = mom
