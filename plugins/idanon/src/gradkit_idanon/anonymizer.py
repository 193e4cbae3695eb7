"""The anonymization pipeline: train the disentangled VAE (with CLUB/HSIC and the independence term),
fit the manifold rejection sampler on identity codes, train the conditional generator, and apply the
multi-oracle privacy hinge.

Generators (``generator=``):

* ``"diffusion"`` (default): a small conditional DDPM G(x | z_id, z_attr) (:mod:`.diffusion`) trained
  on the training faces with the frozen encoder's codes (mu_id, mu_attr). With identity labels
  (``fit(x, ids)``) the identity code of each training image is taken from *another image of the
  same identity* (``pair_ids=True``), so the generator must read attributes from the attribute map
  and identity from z_id. Sampling: deterministic DDIM in ``sample_steps`` steps (the LCM
  stand-in). The privacy hinge acts as **guidance** on each sample: at the last ``guide_steps``
  DDIM steps, x_t <- x_t - guide_scale * g / rms(g) with g = d L_priv(x0_hat(x_t), x) / d x_t per
  sample; g is exactly zero (no step) for samples below every threshold.
* ``"vae-decoder"``: the VAE decoder D(z', z_attr); the hinge fine-tunes it:
  L_ft = ||D(z_id, z_attr) - x||^2 + w_priv * L_priv(D(z', z_attr), x)
  + lam_cyc * ||mu_attr(D(z', z_attr)) - z_attr||^2.

``hinge_margin`` lowers every threshold of the hinge by a margin (tau_m - margin): a tighter
privacy setting than the FAR threshold used for evaluation.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ._checks import check_float, check_images, check_int
from .mi import CLUB, METHODS
from .oracles import OracleEnsemble
from .diffusion import ConditionalDiffusion
from .sampler import ManifoldRejectionSampler
from .vae import DisentangledFaceVAE


GENERATORS = ("diffusion", "vae-decoder")


class IdentityDecoupledAnonymizer:
    def __init__(self, model: DisentangledFaceVAE, *, oracles: OracleEnsemble, beta_id: float = 1e-3,
                 beta_attr: float = 0.05, lam_mi: float = 100.0, lam_ind: float = 1.0, lam_id: float = 20.0,
                 mi: str = "hsic", w_priv: float = 50.0, lam_cyc: float = 1.0, epochs: int = 10,
                 hinge_steps: int = 150, lr: float = 2e-3, batch_size: int = 64, max_cos: float = 0.0,
                 density_quantile: float = 0.05, n_components: int = 8, max_tries: int = 100, seed: int = 0,
                 generator: str = "diffusion", diff_steps: int = 1500, diff_width: int = 16, diff_T: int = 100,
                 diff_batch: int = 32, sample_steps: int = 10, guide_scale: float = 0.2, guide_steps: int = 10,
                 hinge_margin: float = 0.25, pair_ids: bool = True):
        if not isinstance(model, DisentangledFaceVAE):
            raise TypeError(f"model must be a DisentangledFaceVAE, got {type(model).__name__}")
        if not isinstance(oracles, OracleEnsemble):
            raise TypeError(f"oracles must be an OracleEnsemble, got {type(oracles).__name__}")
        if generator not in GENERATORS:
            raise ValueError(f"unknown generator {generator!r}; expected one of {GENERATORS}")
        if mi not in METHODS:
            raise ValueError(f"unknown MI estimator {mi!r}; expected one of {METHODS}")
        for name, v in dict(beta_id=beta_id, beta_attr=beta_attr, lam_mi=lam_mi, lam_ind=lam_ind, lam_id=lam_id,
                            w_priv=w_priv, lam_cyc=lam_cyc).items():
            check_float(v, name, low=0.0)
        check_float(lr, "lr", low=0.0, low_open=True)
        check_int(epochs, "epochs")
        check_int(hinge_steps, "hinge_steps", low=0)
        check_int(batch_size, "batch_size", low=2)
        for name, v in dict(diff_steps=diff_steps, sample_steps=sample_steps, guide_steps=guide_steps).items():
            check_int(v, name, low=0 if name != "sample_steps" else 1)
        check_float(guide_scale, "guide_scale", low=0.0)
        check_float(hinge_margin, "hinge_margin", low=0.0, high=2.0)
        self.generator, self.pair_ids = generator, bool(pair_ids)
        self.diff_kw = dict(width=check_int(diff_width, "diff_width"), T=check_int(diff_T, "diff_T", low=2))
        self.diff_steps, self.diff_batch = diff_steps, check_int(diff_batch, "diff_batch")
        self.sample_steps, self.guide_scale, self.guide_steps = sample_steps, guide_scale, guide_steps
        self.hinge_margin = hinge_margin
        self.diffusion: ConditionalDiffusion | None = None
        self.model, self.oracles, self.mi = model, oracles, mi
        self.hp = dict(beta_id=beta_id, beta_attr=beta_attr, lam_mi=lam_mi, lam_ind=lam_ind, lam_id=lam_id)
        self.w_priv, self.lam_cyc, self.epochs, self.hinge_steps = w_priv, lam_cyc, epochs, hinge_steps
        self.lr, self.batch_size, self.seed = lr, batch_size, seed
        self.sampler_kw = dict(max_cos=max_cos, density_quantile=density_quantile, n_components=n_components,
                               max_tries=max_tries)
        self.sampler: ManifoldRejectionSampler | None = None
        self.history: dict = {"vae": [], "hinge": []}

    def fit(self, x: torch.Tensor, ids=None) -> "IdentityDecoupledAnonymizer":
        """Train on faces ``x`` (B, 1, 32, 32). Identity labels ``ids`` ((B,) ints) are optional; the diffusion
        generator uses them (``pair_ids``) to pair each image with another image of the same identity."""
        check_images(x)
        if ids is not None:
            ids = torch.as_tensor(ids)
            if ids.shape != (x.shape[0],) or ids.is_floating_point():
                raise ValueError(f"ids must be ({x.shape[0]},) integer labels, got {ids.dtype} {tuple(ids.shape)}")
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
        self._fit_generator(x, ids, g)
        return self

    def _codes(self, x):
        with torch.no_grad():
            enc = [self.model.encode(x[i:i + 256]) for i in range(0, x.shape[0], 256)]
        return torch.cat([e[0][0] for e in enc]), torch.cat([e[1][0] for e in enc])

    def _fit_generator(self, x, ids, g):
        """Sampler + generator on a trained VAE (split out so that ablations can reuse one VAE)."""
        zi, za = self._codes(x)
        self.sampler = ManifoldRejectionSampler.from_codes(zi, seed=self.seed, **self.sampler_kw)
        if self.generator == "vae-decoder":
            if self.hinge_steps and self.w_priv:
                self._hinge_finetune(x, g)
            return
        pair = None
        if ids is not None and self.pair_ids:
            rng = np.random.default_rng(self.seed)
            ids_np = ids.numpy()
            pair = np.arange(len(ids_np))
            for v in np.unique(ids_np):
                rows = np.flatnonzero(ids_np == v)
                pair[rows] = rng.permutation(rows) if len(rows) > 1 else rows
            pair = torch.as_tensor(pair)
        self.pair_index = pair  # row i is trained with the identity code of row pair_index[i] (None: its own)
        torch.manual_seed(self.seed)
        self.diffusion = ConditionalDiffusion(id_dim=self.model.id_dim, attr_channels=self.model.attr_channels,
                                              **self.diff_kw)
        self.diffusion.fit(x, zi, za, steps=self.diff_steps, batch_size=self.diff_batch, seed=self.seed,
                           pair_index=pair)

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
            hinge = self.hinge(xa, xb)
            cyc = ((m.encode(xa)[1][0] - za) ** 2).flatten(1).sum(1).mean()
            loss = rec + self.w_priv * hinge + self.lam_cyc * cyc
            opt.zero_grad()
            loss.backward()
            opt.step()
            self.history["hinge"].append({"rec": float(rec.detach()), "hinge": float(hinge.detach()), "cyc": float(cyc.detach())})
        m.eval()

    def _thresholds(self):
        return self.oracles.thresholds - self.hinge_margin

    def hinge(self, x_anon, x):
        """The privacy hinge with this anonymizer's thresholds (tau_m - hinge_margin)."""
        sim = self.oracles.similarity(x_anon, x.detach())
        return (self.oracles.weights * torch.relu(sim - self._thresholds()[:, None]).mean(1)).sum()

    def above_threshold(self, x_anon, x) -> torch.Tensor:
        """(B,) bool: some oracle is at or above its hinge threshold (the hinge is active for that sample)."""
        with torch.no_grad():
            return (self.oracles.similarity(x_anon, x) >= self._thresholds()[:, None]).any(0)

    def anonymize(self, x: torch.Tensor, *, generator=None, use_sampler: bool = True, hinge: bool = True) -> torch.Tensor:
        """Replace each face's identity code and generate; ``use_sampler=False`` draws z' from the GMM with no
        acceptance test (the "random identity swap" baseline); ``hinge=False`` skips the hinge guidance of the
        diffusion generator (ablation). ``generator``: an int seed or a numpy Generator (identity draw; the
        diffusion noise is seeded from the same int, or from 0)."""
        if self.sampler is None:
            raise RuntimeError("call fit() before anonymize()")
        check_images(x)
        m = self.model.eval()
        with torch.no_grad():
            (zi, _), (za, _) = m.encode(x)
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        if use_sampler:
            zn = self.sampler.sample(zi, generator=rng)
        else:
            zn = torch.as_tensor(self.sampler._draw(len(zi), rng), dtype=zi.dtype)
        if self.generator == "vae-decoder":
            with torch.no_grad():
                return m.decode(zn, za)
        seed = generator if isinstance(generator, (int, np.integer)) else 0
        noise = torch.randn((x.shape[0], 1, 32, 32), generator=torch.Generator().manual_seed(int(seed)))
        guide = None
        if hinge and self.guide_scale and self.w_priv:
            xs = x.detach()

            def guide(x0):  # per-sample hinge, summed: each sample's gradient is its own term's
                return self.w_priv * self.hinge(x0, xs) * x0.shape[0]

        return self.diffusion.sample(zn, za, steps=self.sample_steps, noise=noise, guide=guide,
                                     guide_scale=self.guide_scale if guide is not None else 0.0,
                                     guide_steps=self.guide_steps, normalize=True)
