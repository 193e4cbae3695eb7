"""Face-recognition oracles: small CNN embedders trained with a CosFace head, thresholds set at a
false-accept rate on impostor pairs, and the multi-oracle privacy hinge.

Privacy hinge (reconstruction; the paper's text gives only "a hinge-based loss that halts
optimization once identity similarity drops below the impostor-regime threshold")::

    L_priv = sum_m w_m * mean_b max(0, cos(phi_m(x_anon_b), phi_m(x_b)) - tau_m)

Its gradient is exactly zero once every oracle's similarity is below its threshold.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_float, check_images, check_int


class FaceEmbedder(nn.Module):
    """Small CNN face embedder phi: (B, 1, 32, 32) -> unit vectors (B, dim)."""

    def __init__(self, *, width: int = 16, dim: int = 64):
        super().__init__()
        check_int(width, "width")
        check_int(dim, "dim")
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.BatchNorm2d(4 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(4 * w * 16, dim))
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x)
        return F.normalize(self.net(x), dim=1)


def train_oracle(images: torch.Tensor, ids: torch.Tensor, *, width: int = 16, dim: int = 64, epochs: int = 6,
                 lr: float = 3e-3, batch_size: int = 32, scale: float = 16.0, margin: float = 0.2,
                 seed: int = 0) -> FaceEmbedder:
    """Train a CosFace embedder (logits s*(cos - m*onehot)) on labelled faces; returns it frozen, in eval mode."""
    check_images(images, "images")
    if ids.shape != (images.shape[0],):
        raise ValueError(f"ids must have shape ({images.shape[0]},), got {tuple(ids.shape)}")
    torch.manual_seed(seed)
    _, ids_c = torch.unique(ids, return_inverse=True)
    n_cls = int(ids_c.max()) + 1
    model = FaceEmbedder(width=width, dim=dim)
    head = nn.Parameter(torch.randn(n_cls, dim) * 0.1)
    opt = torch.optim.Adam(list(model.parameters()) + [head], lr=lr)
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            b = perm[i:i + batch_size]
            cos = model(images[b]) @ F.normalize(head, dim=1).T
            logits = scale * (cos - margin * F.one_hot(ids_c[b], n_cls))
            loss = F.cross_entropy(logits, ids_c[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def far_threshold(oracle: nn.Module, images: torch.Tensor, ids: torch.Tensor, far: float = 1e-3) -> float:
    """Cosine threshold tau at false-accept rate ``far`` over all impostor pairs (different ids)."""
    far = check_float(far, "far", low=0.0, high=1.0, low_open=True)
    check_images(images, "images")
    e = oracle(images)
    sim = e @ e.T
    iu = torch.triu_indices(len(ids), len(ids), offset=1)
    imp = sim[iu[0], iu[1]][ids[iu[0]] != ids[iu[1]]]
    if imp.numel() == 0:
        raise ValueError("no impostor pairs: the threshold set needs at least two identities")
    if far * imp.numel() < 1:
        raise ValueError(f"far={far} needs at least {int(np.ceil(1 / far))} impostor pairs, got {imp.numel()}")
    return float(torch.quantile(imp.double(), 1.0 - far))


class OracleEnsemble(nn.Module):
    """Frozen oracles phi_m with thresholds tau_m and weights w_m; the privacy hinge."""

    def __init__(self, oracles: Sequence[nn.Module], thresholds: Sequence[float], weights: Sequence[float] | None = None):
        super().__init__()
        if len(oracles) == 0:
            raise ValueError("OracleEnsemble needs at least one oracle")
        if len(thresholds) != len(oracles):
            raise ValueError(f"need one threshold per oracle: {len(oracles)} oracles, {len(thresholds)} thresholds")
        weights = [1.0] * len(oracles) if weights is None else list(weights)
        if len(weights) != len(oracles):
            raise ValueError(f"need one weight per oracle: {len(oracles)} oracles, {len(weights)} weights")
        self.oracles = nn.ModuleList(oracles)
        for o in self.oracles:
            for p in o.parameters():
                p.requires_grad_(False)
        self.register_buffer("thresholds", torch.tensor(
            [check_float(t, "threshold", low=-1.0, high=1.0) for t in thresholds]))
        self.register_buffer("weights", torch.tensor([check_float(w, "weight", low=0.0) for w in weights]))

    def similarity(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosine similarity per oracle and pair: (M, B)."""
        check_images(a, "a")
        check_images(b, "b")
        if a.shape != b.shape:
            raise ValueError(f"a and b must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
        return torch.stack([(o(a) * o(b)).sum(1) for o in self.oracles])

    def hinge_loss(self, x_anon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """sum_m w_m mean_b relu(cos_m - tau_m); the original ``x`` is treated as a constant."""
        sim = self.similarity(x_anon, x.detach())
        return (self.weights * F.relu(sim - self.thresholds[:, None]).mean(1)).sum()

    def below_threshold(self, x_anon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(B,) bool: every oracle's similarity is below its threshold."""
        with torch.no_grad():
            return (self.similarity(x_anon, x) < self.thresholds[:, None]).all(0)
