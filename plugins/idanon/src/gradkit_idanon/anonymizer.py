"""The anonymization pipeline: train the disentangled VAE (with CLUB/HSIC and the independence term),
fit the manifold rejection sampler on identity codes, then fine-tune the decoder with the
multi-oracle privacy hinge on swapped identities.

Generator: the paper uses a conditional latent diffusion model distilled to an LCM; here the
VAE decoder D(z', z_attr) is the conditional generator (``generator="vae-decoder"``, the only one).

Hinge fine-tuning objective (reconstruction)::

    L_ft = ||D(z_id, z_attr) - x||^2 + w_priv * L_priv(D(z', z_attr), x)
           + lam_cyc * ||mu_attr(D(z', z_attr)) - z_attr||^2

(the reconstruction term keeps the decoder faithful; the cycle term keeps attributes under the swap).
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ._checks import check_float, check_images, check_int
from .mi import CLUB, METHODS
from .oracles import OracleEnsemble
from .sampler import ManifoldRejectionSampler
from .vae import DisentangledFaceVAE


class IdentityDecoupledAnonymizer:
    def __init__(self, model: DisentangledFaceVAE, *, oracles: OracleEnsemble, beta_id: float = 1e-3,
                 beta_attr: float = 0.05, lam_mi: float = 100.0, lam_ind: float = 1.0, lam_id: float = 20.0,
                 mi: str = "hsic", w_priv: float = 50.0, lam_cyc: float = 1.0, epochs: int = 10,
                 hinge_steps: int = 150, lr: float = 2e-3, batch_size: int = 64, max_cos: float = 0.0,
                 density_quantile: float = 0.05, n_components: int = 8, max_tries: int = 100, seed: int = 0):
        if not isinstance(model, DisentangledFaceVAE):
            raise TypeError(f"model must be a DisentangledFaceVAE, got {type(model).__name__}")
        if not isinstance(oracles, OracleEnsemble):
            raise TypeError(f"oracles must be an OracleEnsemble, got {type(oracles).__name__}")
        if mi not in METHODS:
            raise ValueError(f"unknown MI estimator {mi!r}; expected one of {METHODS}")
        for name, v in dict(beta_id=beta_id, beta_attr=beta_attr, lam_mi=lam_mi, lam_ind=lam_ind, lam_id=lam_id,
                            w_priv=w_priv, lam_cyc=lam_cyc).items():
            check_float(v, name, low=0.0)
        check_float(lr, "lr", low=0.0, low_open=True)
        check_int(epochs, "epochs")
        check_int(hinge_steps, "hinge_steps", low=0)
        check_int(batch_size, "batch_size", low=2)
        self.model, self.oracles, self.mi = model, oracles, mi
        self.hp = dict(beta_id=beta_id, beta_attr=beta_attr, lam_mi=lam_mi, lam_ind=lam_ind, lam_id=lam_id)
        self.w_priv, self.lam_cyc, self.epochs, self.hinge_steps = w_priv, lam_cyc, epochs, hinge_steps
        self.lr, self.batch_size, self.seed = lr, batch_size, seed
        self.sampler_kw = dict(max_cos=max_cos, density_quantile=density_quantile, n_components=n_components,
                               max_tries=max_tries)
        self.sampler: ManifoldRejectionSampler | None = None
        self.history: dict = {"vae": [], "hinge": []}

    def fit(self, x: torch.Tensor, ids=None) -> "IdentityDecoupledAnonymizer":
        """Train on faces ``x`` (B, 1, 32, 32); identity labels are not needed (``ids`` is ignored)."""
        check_images(x)
        if x.shape[0] < self.batch_size:
            raise ValueError(f"need at least batch_size={self.batch_size} images, got {x.shape[0]}")
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed)
        m, phi = self.model, self.oracles.oracles[0]
        club = CLUB(m.id_dim, m.attr_channels * 64) if self.mi == "club" else None
        opt = torch.optim.Adam(m.parameters(), lr=self.lr)
        opt_c = torch.optim.Adam(club.parameters(), lr=self.lr) if club is not None else None
        n = x.shape[0]
        m.train()
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=g)
            for i in range(0, n - self.batch_size + 1, self.batch_size):
                xb = x[perm[i:i + self.batch_size]]
                if club is not None and self.hp["lam_mi"]:
                    with torch.no_grad():
                        (mi_, _), (ma, _) = m.encode(xb)
                    opt_c.zero_grad()
                    club.learning_loss(mi_, ma.flatten(1)).backward()
                    opt_c.step()
                loss, parts = m.loss(xb, oracle=phi, mi=self.mi, club=club, generator=g, **self.hp)
                opt.zero_grad()
                loss.backward()
                opt.step()
                self.history["vae"].append({k: float(v.detach()) for k, v in parts.items()})
        m.eval()
        with torch.no_grad():
            codes = torch.cat([m.encode(x[i:i + 256])[0][0] for i in range(0, n, 256)])
        self.sampler = ManifoldRejectionSampler.from_codes(codes, seed=self.seed, **self.sampler_kw)
        if self.hinge_steps and self.w_priv:
            self._hinge_finetune(x, g)
        return self

    def _hinge_finetune(self, x, g):
        m = self.model
        params = list(m.id_proj.parameters()) + list(m.dec.parameters())
        opt = torch.optim.Adam(params, lr=self.lr * 0.5)
        rng = np.random.default_rng(self.seed)
        n = x.shape[0]
        for _ in range(self.hinge_steps):
            xb = x[torch.randint(0, n, (self.batch_size,), generator=g)]
            with torch.no_grad():
                (zi, _), (za, _) = m.encode(xb)
            zn = self.sampler.sample(zi, generator=rng)
            xa = m.decode(zn, za)
            rec = ((m.decode(zi, za) - xb) ** 2).flatten(1).sum(1).mean()
            hinge = self.oracles.hinge_loss(xa, xb)
            cyc = ((m.encode(xa)[1][0] - za) ** 2).flatten(1).sum(1).mean()
            loss = rec + self.w_priv * hinge + self.lam_cyc * cyc
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.history["hinge"].append({"rec": float(rec.detach()), "hinge": float(hinge.detach()), "cyc": float(cyc.detach())})
        m.eval()

    @torch.no_grad()
    def anonymize(self, x: torch.Tensor, *, generator=None, use_sampler: bool = True) -> torch.Tensor:
        """Replace each face's identity code; ``use_sampler=False`` draws z' from the GMM with no acceptance test
        (the "random identity swap" baseline)."""
        if self.sampler is None:
            raise RuntimeError("call fit() before anonymize()")
        check_images(x)
        m = self.model.eval()
        (zi, _), (za, _) = m.encode(x)
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        if use_sampler:
            zn = self.sampler.sample(zi, generator=rng)
        else:
            zn = torch.as_tensor(self.sampler._draw(len(zi), rng), dtype=zi.dtype)
        return m.decode(zn, za)
