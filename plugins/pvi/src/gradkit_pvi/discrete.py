"""Discrete-latent estimator comparison (stand-in for the paper's Fig. 7 AIR study, which needs
multi-MNIST): a binary-latent VAE on binarised scikit-learn digits.

Model: ``z ∈ {0,1}^D`` with ``p(z_d = 1) = 1/2``; ``x | z ~ Bernoulli(MLP(z))`` (64 pixels, binarised at
intensity ≥ 8/16).  Guide: ``q(z | x) = Π_d Bernoulli(σ(MLP(x))_d)``.  Estimators (all the same ELBO
program with different primitives, except ``iwae_mvd`` and ``rws``):

* ``reinforce``: one ``D``-coordinate ``flip_reinforce`` site, no baseline;
* ``reinforce_bl``: ``flip_reinforce`` with a *learned* baseline ``b_ψ(x)`` (an MLP of the data, so the
  estimator stays unbiased), trained jointly by regressing ``b_ψ(x)`` on the per-datapoint ELBO
  estimate ``V`` (loss ``(V − b_ψ(x))²``, as NVIL / Pyro's ``baseline={'nn_baseline': ...}``);
* ``mvd``: ``flip_mvd`` (D re-executions per step);
* ``enum``: ``flip_enum`` (2^D branches);
* ``hybrid``: as the artifact's ``genjax_hybrid_air.py``, whose guide samples its first presence flips
  with ``flip_mvd`` and the last with ``flip_enum``: here the first ``D − 1`` coordinates are one
  ``flip_mvd`` site and the last coordinate a ``flip_enum`` site (same guide distribution; each MVD
  re-execution enumerates the last coordinate: (D − 1)·2 + 2 runs per step);
* ``iwae_mvd``: the IWAE(2) objective with ``flip_mvd``;
* ``rws``: reweighted wake-sleep, SIR(4): ``q_wake`` for the guide, ``p_wake`` for the decoder.

Metric: the *exact* ELBO on held-out digits (the 2^D latent values enumerated), against iterations and
CPU seconds.
"""

from __future__ import annotations

import math
import time
from typing import Dict

import torch
from torch import nn

from . import adev as A
from . import objectives as O

ESTIMATORS = ["reinforce", "reinforce_bl", "mvd", "enum", "hybrid", "iwae_mvd", "rws"]
PRIMS = {"reinforce": A.flip_reinforce, "reinforce_bl": A.flip_reinforce, "mvd": A.flip_mvd, "enum": A.flip_enum,
         "iwae_mvd": A.flip_mvd, "rws": A.flip_reinforce}


def data(seed: int = 0):
    from sklearn.datasets import load_digits

    x = (torch.tensor(load_digits().data, dtype=torch.float32) >= 8).float()
    g = torch.Generator().manual_seed(1234)
    perm = torch.randperm(x.shape[0], generator=g)
    return x[perm[:1500]], x[perm[1500:]]


class BinaryVAE(nn.Module):
    def __init__(self, latent: int = 4, hidden: int = 64):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.Tanh(), nn.Linear(hidden, 64))
        self.latent = latent

    def log_joint(self, x, z):
        lik = -nn.functional.binary_cross_entropy_with_logits(self.dec(z), x, reduction="none").sum(-1)
        return lik - self.latent * math.log(2.0)

    def guide(self, prim):
        def g(ctx, x):
            return ctx.sample(prim, torch.sigmoid(self.enc(x)), name="z")
        return g

    def hybrid_guide(self):
        """MVD for the first ``D − 1`` coordinates, enumeration for the last (the artifact's hybrid)."""
        if self.latent < 2:
            raise ValueError("the hybrid guide needs latent >= 2 (an MVD part and an enumerated part)")

        def g(ctx, x):
            p = torch.sigmoid(self.enc(x))
            ctx.sample(A.flip_mvd, p[..., :-1], name="z_mvd")
            ctx.sample(A.flip_enum, p[..., -1:], name="z_enum")
        return g

    def model_for(self, x):
        def lp(ch):
            z = ch["z"] if "z" in ch else torch.cat([ch["z_mvd"], ch["z_enum"]], -1)
            return self.log_joint(x, z)
        return lp

    def configs(self):
        D = self.latent
        return torch.tensor([[(c >> d) & 1 for d in range(D)] for c in range(2 ** D)], dtype=torch.float32)

    def exact_elbo_per_datum(self, x):
        """``E_q[log p(x, z) − log q(z | x)]`` by enumerating the 2^D latent values (differentiable)."""
        logits = self.enc(x)
        total = torch.zeros(x.shape[0])
        for c in self.configs():
            zc = c.expand(x.shape[0], self.latent)
            lq = -nn.functional.binary_cross_entropy_with_logits(logits, zc, reduction="none").sum(-1)
            total = total + lq.exp() * (self.log_joint(x, zc) - lq)
        return total

    @torch.no_grad()
    def exact_elbo(self, x):
        return self.exact_elbo_per_datum(x).mean().item()


class BaselineNet(nn.Module):
    """Learned REINFORCE baseline ``b_ψ(x) = m + MLP_ψ(x)`` (NVIL-style): ``m`` an exponential moving
    average of past ELBO estimates (updated *after* each step, so it does not depend on the current
    sample), the MLP a learned data-dependent correction.  A function of the data and the past only, so
    the estimator stays unbiased."""

    def __init__(self, hidden: int = 32, decay: float = 0.9):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"BaselineNet: decay must lie in [0, 1), got {decay!r}")
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        self.decay = decay
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("seen", torch.zeros((), dtype=torch.bool))

    def forward(self, x):
        return self.mean + self.net(x).squeeze(-1)

    @torch.no_grad()
    def update(self, values: torch.Tensor) -> None:
        m = values.mean()
        self.mean.copy_(torch.where(self.seen, self.decay * self.mean + (1 - self.decay) * m, m))
        self.seen.fill_(True)


def estimator_step(estimator: str, vae: BinaryVAE, x: torch.Tensor, baseline_net=None) -> torch.Tensor:
    """The loss whose ``.backward()`` gives one step's gradients (the negated ELBO surrogate, or the RWS
    wake objectives; for ``reinforce_bl`` plus the baseline's regression loss)."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    model = vae.model_for(x)
    if estimator == "reinforce_bl":
        if baseline_net is None:
            raise ValueError("reinforce_bl needs a baseline_net (BaselineNet)")
        b = baseline_net(x)
        g = vae.guide(A.baseline(A.flip_reinforce, b.detach()))
        S, V = A.expectation(lambda ctx, x: O.elbo(model, g)(ctx, x)).surrogate_and_values(x)
        loss = -S + ((V - b) ** 2).mean()
        baseline_net.update(V)
        return loss
    if estimator == "hybrid":
        prog = O.elbo(model, vae.hybrid_guide())
    elif estimator == "iwae_mvd":
        prog = O.iwae(model, vae.guide(A.flip_mvd), 2)
    elif estimator == "rws":
        g = vae.guide(A.flip_reinforce)
        qw, pw = O.q_wake(model, g, 4), O.p_wake(model, g, 4)
        prog = lambda ctx, x: qw(ctx, x) + pw(ctx, x)
    else:
        prog = O.elbo(model, vae.guide(PRIMS[estimator]))
    return -A.expectation(prog).surrogate(x)


def train(estimator: str, steps: int, seed: int, latent: int = 4, batch: int = 64, lr: float = 3e-3,
          eval_every: int = 50) -> Dict:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    xtr, xte = data()
    torch.manual_seed(seed)
    vae = BinaryVAE(latent)
    params = list(vae.parameters())
    bnet = None
    if estimator == "reinforce_bl":
        bnet = BaselineNet()
        params += list(bnet.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    curve_it, curve_t, curve_v = [0], [0.0], [vae.exact_elbo(xte)]
    cpu = 0.0
    gen = torch.Generator().manual_seed(seed)
    for it in range(1, steps + 1):
        idx = torch.randint(0, xtr.shape[0], (batch,), generator=gen)
        x = xtr[idx]
        t0 = time.process_time()
        opt.zero_grad(set_to_none=True)
        estimator_step(estimator, vae, x, bnet).backward()
        opt.step()
        cpu += time.process_time() - t0
        if it % eval_every == 0 or it == steps:
            curve_it.append(it)
            curve_t.append(cpu)
            curve_v.append(vae.exact_elbo(xte))
    return {"iters": curve_it, "cpu_s": curve_t, "elbo": curve_v, "final": curve_v[-1]}
