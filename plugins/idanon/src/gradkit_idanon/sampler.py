"""Manifold-aware rejection sampler for replacement identities.

Draw z' ~ p-hat(z_id) (a Gaussian mixture fitted on training identity codes) and accept iff

    cos(z' - c, z_id - c) < max_cos          (distinct; c = mean training code)
    log p-hat(z') > min_log_density            (realistic: on the code manifold)

with ``max_tries`` rounds of candidates per row; rows still unaccepted raise
:class:`RejectionSamplingError` naming how many failed and why.
"""

from __future__ import annotations

import numpy as np
import torch

from ._checks import check_float, check_int, check_tensor


class RejectionSamplingError(RuntimeError):
    """No acceptable replacement identity was found within the retry cap."""


class ManifoldRejectionSampler:
    def __init__(self, density, *, max_cos: float = 0.0, min_log_density: float, max_tries: int = 100,
                 center=None, accept_fn=None):
        if not (hasattr(density, "sample") and hasattr(density, "score_samples")):
            raise TypeError("density must have sample(n) and score_samples(X) (e.g. a fitted sklearn GaussianMixture)")
        self.max_cos = check_float(max_cos, "max_cos", high=1.0)
        if self.max_cos <= -1.0:
            raise ValueError(f"max_cos={self.max_cos} is impossible: a cosine is never below -1")
        self.min_log_density = check_float(min_log_density, "min_log_density")
        self.max_tries = check_int(max_tries, "max_tries")
        self.density = density
        dim = density.means_.shape[1] if hasattr(density, "means_") else None
        self.center = np.zeros(dim) if center is None else np.asarray(center, dtype=np.float64)
        self.accept_fn = accept_fn
        self.last_tries = 0

    @classmethod
    def from_codes(cls, codes, *, n_components: int = 8, density_quantile: float = 0.05, max_cos: float = 0.0,
                   max_tries: int = 100, seed: int = 0, **kw):
        """Fit the GMM on training codes; rho = the ``density_quantile`` quantile of their log-density."""
        from sklearn.mixture import GaussianMixture

        codes = np.asarray(codes.detach() if isinstance(codes, torch.Tensor) else codes, dtype=np.float64)
        if codes.ndim != 2 or codes.shape[0] < n_components:
            raise ValueError(f"codes must be (N >= n_components={n_components}, d), got {codes.shape}")
        if not np.isfinite(codes).all():
            raise ValueError("codes contain NaN or inf")
        q = check_float(density_quantile, "density_quantile", low=0.0, high=1.0)
        gmm = GaussianMixture(n_components, covariance_type="full", random_state=seed, reg_covar=1e-4).fit(codes)
        rho = float(np.quantile(gmm.score_samples(codes), q))
        return cls(gmm, max_cos=max_cos, min_log_density=rho, max_tries=max_tries, center=codes.mean(0), **kw)

    def _draw(self, n, rng):
        # GaussianMixture.sample uses its own random_state; draw ourselves for seeded, repeatable samples
        g = self.density
        comp = rng.choice(len(g.weights_), size=n, p=g.weights_)
        eps = rng.standard_normal((n, g.means_.shape[1]))
        chol = np.linalg.cholesky(g.covariances_)
        return g.means_[comp] + np.einsum("nij,nj->ni", chol[comp], eps)

    def sample(self, z_id: torch.Tensor, generator: np.random.Generator | int | None = None) -> torch.Tensor:
        check_tensor(z_id, "z_id", ndim=2)
        if z_id.shape[1] != len(self.center):
            raise ValueError(f"z_id must have {len(self.center)} columns, got {z_id.shape[1]}")
        rng = generator if isinstance(generator, np.random.Generator) else np.random.default_rng(generator)
        z = z_id.detach().double().numpy() - self.center
        out = np.zeros_like(z)
        todo = np.arange(len(z))
        for t in range(1, self.max_tries + 1):
            cand = self._draw(len(todo), rng)
            c = cand - self.center
            cos = (c * z[todo]).sum(1) / (np.linalg.norm(c, axis=1) * np.linalg.norm(z[todo], axis=1) + 1e-12)
            ok = (cos < self.max_cos) & (self.density.score_samples(cand) > self.min_log_density)
            if self.accept_fn is not None and ok.any():
                ok[ok] = np.asarray(self.accept_fn(torch.as_tensor(cand[ok], dtype=z_id.dtype), todo[ok]), dtype=bool)
            out[todo[ok]] = c[ok]
            todo = todo[~ok]
            self.last_tries = t
            if len(todo) == 0:
                return torch.as_tensor(out + self.center, dtype=z_id.dtype)
        raise RejectionSamplingError(
            f"{len(todo)} of {len(z)} identities got no replacement within max_tries={self.max_tries}: no candidate had "
            f"cos < max_cos={self.max_cos} and log-density > min_log_density={self.min_log_density:.3g}; "
            "loosen the criterion or raise max_tries")
