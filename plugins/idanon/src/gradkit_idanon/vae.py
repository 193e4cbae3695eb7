"""Disentangled identity/attribute VAE and the gradient-based independence term.

Encoder E(x) -> q(z_id | x) (global vector, ``id_dim``) and q(z_attr | x) (spatial map
``attr_channels`` x 8 x 8); decoder D(z_id, z_attr).  Loss (reconstruction of the paper's
abstract; weights are ours)::

    L = ||D(z_id, z_attr) - x||^2 + beta_id KL_id + beta_attr KL_attr
        + lam_mi * I-hat(z_id; z_attr) + lam_ind * L_ind + lam_id * L_idsup

* L_ind (reconstruction, option ``lam_ind``): ||d phi(D(z_id, z_attr)) / d z_attr||_F^2, estimated
  with ``projections`` Gaussian probes v (E_v ||J^T v||^2 = ||J||_F^2): the oracle identity of the
  decoded face should not move with the attribute code.
* L_idsup (reconstruction, option ``lam_id``; the abstract does not say how z_id is tied to
  identity): 1 - cos(W mu_id, phi(x)) with a frozen oracle phi, so that z_id carries identity.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._checks import check_images, check_int, check_tensor
from .mi import CLUB, mi_penalty


class DisentangledFaceVAE(nn.Module):
    """VAE on (B, 1, 32, 32) faces with a global identity code and a spatial attribute code."""

    def __init__(self, *, id_dim: int = 16, attr_channels: int = 4, width: int = 32, oracle_dim: int = 64):
        super().__init__()
        check_int(id_dim, "id_dim")
        check_int(attr_channels, "attr_channels")
        check_int(width, "width")
        check_int(oracle_dim, "oracle_dim")
        w = width
        self.id_dim, self.attr_channels = id_dim, attr_channels
        self.enc = nn.Sequential(nn.Conv2d(1, w, 4, 2, 1), nn.ReLU(), nn.Conv2d(w, 2 * w, 4, 2, 1), nn.ReLU())
        self.id_head = nn.Linear(2 * w * 64, 2 * id_dim)
        self.attr_head = nn.Conv2d(2 * w, 2 * attr_channels, 1)
        self.id_proj = nn.Linear(id_dim, 16 * 64)
        self.dec = nn.Sequential(
            nn.Conv2d(16 + attr_channels, 2 * w, 3, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, 2, 1), nn.ReLU(),
            nn.ConvTranspose2d(w, 1, 4, 2, 1))
        self.to_oracle = nn.Linear(id_dim, oracle_dim)

    def encode(self, x):
        """Returns ((mu_id, logvar_id), (mu_attr, logvar_attr))."""
        check_images(x)
        h = self.enc(x)
        mi, li = self.id_head(h.flatten(1)).chunk(2, dim=1)
        ma, la = self.attr_head(h).chunk(2, dim=1)
        return (mi, li.clamp(-8, 8)), (ma, la.clamp(-8, 8))

    def decode(self, z_id, z_attr):
        check_tensor(z_id, "z_id", ndim=2, shape_tail=(self.id_dim,))
        check_tensor(z_attr, "z_attr", ndim=4, shape_tail=(self.attr_channels, 8, 8))
        if z_id.shape[0] != z_attr.shape[0]:
            raise ValueError(f"z_id and z_attr batch sizes differ: {z_id.shape[0]} vs {z_attr.shape[0]}")
        hid = self.id_proj(z_id).view(-1, 16, 8, 8)
        return torch.sigmoid(self.dec(torch.cat([hid, z_attr], 1)))

    def forward(self, x):
        """Deterministic reconstruction from the posterior means (eval-mode use)."""
        (mi, _), (ma, _) = self.encode(x)
        return self.decode(mi, ma)

    def loss(self, x, *, beta_id=1e-3, beta_attr=1e-3, lam_mi=0.0, lam_ind=0.0, lam_id=0.0, oracle=None,
             mi="club", club: CLUB | None = None, projections: int = 1, ind_batch: int = 8, generator=None):
        """The VAE objective (see module docstring); returns (loss, parts dict)."""
        (mi_, li), (ma, la) = self.encode(x)
        zi = mi_ + torch.randn(mi_.shape, generator=generator) * (0.5 * li).exp()
        za = ma + torch.randn(ma.shape, generator=generator) * (0.5 * la).exp()
        xr = self.decode(zi, za)
        rec = ((xr - x) ** 2).flatten(1).sum(1).mean()
        kl = lambda m, lv: (0.5 * (m ** 2 + lv.exp() - 1 - lv)).flatten(1).sum(1).mean()  # noqa: E731
        parts = {"rec": rec, "kl_id": kl(mi_, li), "kl_attr": kl(ma, la)}
        total = rec + beta_id * parts["kl_id"] + beta_attr * parts["kl_attr"]
        if lam_mi:
            parts["mi"] = mi_penalty(zi, za, method=mi, club=club)
            total = total + lam_mi * parts["mi"]
        if lam_ind or lam_id:
            if oracle is None:
                raise ValueError("lam_ind / lam_id need an oracle (a frozen face embedder)")
        if lam_ind:
            k = min(ind_batch, x.shape[0])
            parts["ind"] = independence_penalty(self, oracle, zi[:k], za[:k], projections=projections, generator=generator)
            total = total + lam_ind * parts["ind"]
        if lam_id:
            with torch.no_grad():
                target = oracle(x)
            parts["idsup"] = (1 - F.cosine_similarity(self.to_oracle(mi_), target, dim=1)).mean()
            total = total + lam_id * parts["idsup"]
        return total, parts


def independence_penalty(decoder, oracle, z_id, z_attr, *, projections: int = 1, generator=None, exact: bool = False):
    """||d phi(D(z_id, z_attr)) / d z_attr||_F^2 averaged over the batch (differentiable, create_graph).

    ``exact=True`` builds the full Jacobian row by row (tests); otherwise ``projections`` Gaussian probes
    give an unbiased estimate.
    """
    check_int(projections, "projections")
    za = z_attr if z_attr.requires_grad else z_attr.detach().requires_grad_(True)
    emb = oracle(decoder.decode(z_id, za))  # (B, d)
    b = emb.shape[0]
    if exact:
        rows = [emb[:, j].sum() for j in range(emb.shape[1])]
    else:
        rows = [(emb * torch.randn(emb.shape, generator=generator)).sum() for _ in range(projections)]
    total = 0.0
    for r in rows:
        (g,) = torch.autograd.grad(r, za, create_graph=True)
        total = total + (g ** 2).sum()
    return total / (b if exact else b * projections)
