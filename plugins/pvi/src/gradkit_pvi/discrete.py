"""Discrete-latent estimator comparison (stand-in for the paper's Fig. 7 AIR study, which needs
multi-MNIST): a binary-latent VAE on binarised scikit-learn digits.

Model: ``z ∈ {0,1}^D`` with ``p(z_d = 1) = 1/2``; ``x | z ~ Bernoulli(MLP(z))`` (64 pixels, binarised at
intensity ≥ 8/16).  Guide: ``q(z | x) = Π_d Bernoulli(σ(MLP(x))_d)``, one ``D``-coordinate flip site.
Estimators (all written as the same ELBO program with a different primitive):
``reinforce`` (flip_reinforce, no baseline), ``mvd`` (flip_mvd: D re-executions per step),
``enum`` (flip_enum: 2^D branches), ``iwae_mvd`` (IWAE(2) objective, flip_mvd) and ``rws``
(reweighted wake-sleep, SIR(4): q_wake for the guide, p_wake for the decoder).  Metric: the *exact*
ELBO on held-out digits (the 2^D latent values enumerated), against iterations and CPU seconds.
"""

from __future__ import annotations

import math
import time
from typing import Dict

import torch
from torch import nn

from . import adev as A
from . import objectives as O

ESTIMATORS = ["reinforce", "mvd", "enum", "iwae_mvd", "rws"]
PRIMS = {"reinforce": A.flip_reinforce, "mvd": A.flip_mvd, "enum": A.flip_enum, "iwae_mvd": A.flip_mvd,
         "rws": A.flip_reinforce}


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

    @torch.no_grad()
    def exact_elbo(self, x):
        D = self.latent
        configs = torch.tensor([[(c >> d) & 1 for d in range(D)] for c in range(2 ** D)], dtype=torch.float32)
        logits = self.enc(x)
        total = torch.zeros(x.shape[0])
        for c in configs:
            zc = c.expand(x.shape[0], D)
            lq = -nn.functional.binary_cross_entropy_with_logits(logits, zc, reduction="none").sum(-1)
            total += lq.exp() * (self.log_joint(x, zc) - lq)
        return total.mean().item()


def train(estimator: str, steps: int, seed: int, latent: int = 4, batch: int = 64, lr: float = 3e-3,
          eval_every: int = 50) -> Dict:
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; expected one of {ESTIMATORS}")
    xtr, xte = data()
    torch.manual_seed(seed)
    vae = BinaryVAE(latent)
    opt = torch.optim.Adam(vae.parameters(), lr=lr)
    prim = PRIMS[estimator]
    model_for = lambda x: (lambda ch: vae.log_joint(x, ch["z"]))
    g = vae.guide(prim)
    if estimator in ("reinforce", "mvd", "enum"):
        make = lambda x: A.expectation(lambda ctx, x: O.elbo(model_for(x), g)(ctx, x))
    elif estimator == "iwae_mvd":
        make = lambda x: A.expectation(lambda ctx, x: O.iwae(model_for(x), g, 2)(ctx, x))
    else:
        make = lambda x: A.expectation(lambda ctx, x: (O.q_wake(model_for(x), g, 4)(ctx, x)
                                                       + O.p_wake(model_for(x), g, 4)(ctx, x)))
    curve_it, curve_t, curve_v = [0], [0.0], [vae.exact_elbo(xte)]
    cpu = 0.0
    gen = torch.Generator().manual_seed(seed)
    for it in range(1, steps + 1):
        idx = torch.randint(0, xtr.shape[0], (batch,), generator=gen)
        x = xtr[idx]
        t0 = time.process_time()
        opt.zero_grad(set_to_none=True)
        (-make(x).surrogate(x)).backward()
        opt.step()
        cpu += time.process_time() - t0
        if it % eval_every == 0 or it == steps:
            curve_it.append(it)
            curve_t.append(cpu)
            curve_v.append(vae.exact_elbo(xte))
    return {"iters": curve_it, "cpu_s": curve_t, "elbo": curve_v, "final": curve_v[-1]}
