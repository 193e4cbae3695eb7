"""Benchmark: overhead of a programmed ELBO gradient over a hand-written one (paper Table 1), and time
per step against Pyro ``Trace_ELBO`` (paper Table 2), on an MLP VAE on scikit-learn digits.

Every implementation computes the same quantity: the reparameterised single-sample ELBO gradient of
a VAE (64-pixel Bernoulli likelihood on pixel intensities in [0, 1], 16-d Gaussian latent, MLPs
64-128-32 / 16-128-64) for one minibatch, forward + backward.  Steps are timed interleaved
(hand, programmed, Pyro, hand, ...) in one process with ``time.process_time``; the reported numbers
are ratios of medians.  The machine is shared, so absolute times are noisy; ratios are the claim.
"""

from __future__ import annotations

import math
import statistics
import time
from typing import Dict

import torch
from torch import nn

from gradkit_core.results import Result

from . import adev as A
from . import objectives as O

LATENT = 16
HIDDEN = 128


class VAE(nn.Module):
    def __init__(self, d_in: int = 64, latent: int = LATENT, hidden: int = HIDDEN):
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
        self.dec = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d_in))
        self.latent = latent

    def encode(self, x):
        h = self.enc(x)
        return h[:, : self.latent], nn.functional.softplus(h[:, self.latent:]) + 1e-4

    def log_joint(self, x, z):
        logits = self.dec(z)
        lik = -nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
        prior = (-0.5 * z ** 2).sum(-1) - 0.5 * self.latent * math.log(2 * math.pi)
        return prior + lik


def digits_data() -> torch.Tensor:
    from sklearn.datasets import load_digits

    x = torch.tensor(load_digits().data, dtype=torch.float32) / 16.0
    return x


def hand_elbo(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    mu, sd = vae.encode(x)
    eps = torch.randn_like(mu)
    z = mu + sd * eps
    logq = (-0.5 * eps ** 2 - torch.log(sd)).sum(-1) - 0.5 * vae.latent * math.log(2 * math.pi)
    return (vae.log_joint(x, z) - logq).mean()


def programmed_elbo(vae: VAE):
    def guide(ctx, x):
        mu, sd = vae.encode(x)
        return ctx.sample(A.mvnormal_diag_reparam, mu, sd, name="z")

    def model_logpdf_for(x):
        return lambda ch: vae.log_joint(x, ch["z"])

    def program(ctx, x):
        return O.elbo(model_logpdf_for(x), guide)(ctx, x)

    return A.expectation(program)


def pyro_step_fn(vae: VAE):
    import pyro
    import pyro.distributions as dist
    from pyro.infer import Trace_ELBO

    def model(x):
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], vae.latent), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=vae.dec(z), validate_args=False).to_event(1), obs=x)

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            mu, sd = vae.encode(x)
            pyro.sample("z", dist.Normal(mu, sd).to_event(1))

    loss = Trace_ELBO()
    pyro.module("vae", vae)

    def step(x):
        return loss.loss_and_grads(model, guide, x)

    return step


def _time(fn, reps: int) -> float:
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t0) / reps


def run(*, quick: bool = False, full: bool = False, seed: int = 0, out=None, progress: bool = True, jobs: int = 1,
        resume: bool = False) -> Result:
    torch.manual_seed(seed)
    batches = [64, 256, 1024]
    rounds, reps = (5, 5) if quick else ((15, 10) if full else (9, 8))
    data = digits_data()
    vae = VAE()
    prog = programmed_elbo(vae)
    res = Result("pvi", title="Programmed vs hand-written ELBO gradient (MLP VAE, digits) and vs Pyro Trace_ELBO")
    try:
        import pyro  # noqa: F401
        pyro_step = pyro_step_fn(vae)
    except ImportError:
        pyro_step = None
        res.add_note("pyro-ppl not installed: the Pyro column is skipped")
    res.meta.update(rounds=rounds, reps_per_round=reps, torch_threads=torch.get_num_threads())
    overheads, pyro_ratios = {}, {}
    for B in batches:
        x = data[:B] if B <= data.shape[0] else data[torch.randint(0, data.shape[0], (B,))]

        def hand():
            vae.zero_grad(set_to_none=True)
            (-hand_elbo(vae, x)).backward()

        def programmed():
            vae.zero_grad(set_to_none=True)
            (-prog.surrogate(x)).backward()

        def pyro_fn():
            vae.zero_grad(set_to_none=True)
            pyro_step(x)

        for f in [hand, programmed] + ([pyro_fn] if pyro_step else []):
            f()  # warm-up
        th, tp, ty = [], [], []
        for _ in range(rounds):
            th.append(_time(hand, reps))
            tp.append(_time(programmed, reps))
            if pyro_step:
                ty.append(_time(pyro_fn, reps))
        mh, mp = statistics.median(th), statistics.median(tp)
        ratios = sorted(p / h for p, h in zip(tp, th))
        overheads[B] = mp / mh
        row = dict(batch=B, hand_ms=round(1e3 * mh, 3), programmed_ms=round(1e3 * mp, 3),
                   overhead=round(mp / mh, 3), overhead_round_min=round(ratios[0], 3),
                   overhead_round_max=round(ratios[-1], 3))
        if pyro_step:
            my = statistics.median(ty)
            pyro_ratios[B] = my / mp
            row.update(pyro_ms=round(1e3 * my, 3), pyro_over_programmed=round(my / mp, 3))
        res.add_row(**row)
    # same gradient: the programmed surrogate and the hand-written ELBO give identical gradients
    # under the same noise
    x = data[:64]
    torch.manual_seed(123)
    g1 = torch.autograd.grad(hand_elbo(vae, x), list(vae.parameters()))
    torch.manual_seed(123)
    g2 = torch.autograd.grad(prog.surrogate(x), list(vae.parameters()))
    same = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(g1, g2))
    res.add_claim("programmed ELBO gradient equals the hand-written one under the same noise", same)
    worst = max(overheads.values())
    res.add_claim("overhead of the programmed ELBO gradient <= 1.3x at every batch size (paper: minimal overhead)",
                  worst <= 1.3, ", ".join(f"B={b}: {v:.2f}x" for b, v in overheads.items()))
    if pyro_ratios:
        res.add_claim("faster than Pyro Trace_ELBO at every batch size",
                      min(pyro_ratios.values()) > 1.0,
                      ", ".join(f"B={b}: Pyro {v:.2f}x slower" for b, v in pyro_ratios.items()))
    return res
