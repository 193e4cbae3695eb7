"""Benchmark: overhead of a programmed ELBO gradient over a hand-written one (paper Table 1), and time
per step against Pyro ``Trace_ELBO`` (paper Table 2), on an MLP VAE on scikit-learn digits.

Every implementation computes the same quantity: the reparameterised single-sample ELBO gradient of
a VAE (64-pixel Bernoulli likelihood on pixel intensities in [0, 1], 16-d Gaussian latent, MLPs
64-128-32 / 16-128-64) for one minibatch, forward + backward (the gradients are checked equal under
the same noise, Pyro's included).  Pyro runs at its fastest eager setting: validation off,
``Trace_ELBO()`` (1 particle, as the program), ``differentiable_loss`` + ``backward`` (no param-store
round trip); the usual SVI style (``pyro.module`` in model and guide, ``loss_and_grads``) is timed too.

Steps are timed interleaved (hand, programmed, Pyro, Pyro-SVI, hand, ...) in one process with
``time.process_time``; each round gives a ratio per implementation pair, and a claim is decided on the
mean of the per-round ratios with a margin of 2 standard errors.  The machine is shared, so absolute
times are noisy; the ratios are the claim, and the load average is recorded.
"""

from __future__ import annotations

import math
import os
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


def pyro_step_fns(vae: VAE):
    """Two Pyro steps on the same model and guide: ``best`` (``Trace_ELBO().differentiable_loss`` and
    ``backward``, validation off by the caller) and ``svi`` (the tutorial style: ``pyro.module`` inside
    model and guide, ``Trace_ELBO().loss_and_grads``).  ``best`` leaves the gradient of minus the mean
    ELBO (the hand-written quantity) in ``.grad``; ``svi`` leaves B times it (Pyro sums over the plate;
    same cost)."""
    import pyro
    import pyro.distributions as dist
    from pyro.infer import Trace_ELBO

    def model(x, register=False):
        if register:
            pyro.module("dec", vae.dec)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(x.shape[0], vae.latent), 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=vae.dec(z)).to_event(1), obs=x)

    def guide(x, register=False):
        if register:
            pyro.module("enc", vae.enc)
        with pyro.plate("data", x.shape[0]):
            mu, sd = vae.encode(x)
            pyro.sample("z", dist.Normal(mu, sd).to_event(1))

    elbo = Trace_ELBO()

    def best(x):
        (elbo.differentiable_loss(model, guide, x) / x.shape[0]).backward()

    def svi(x):
        elbo.loss_and_grads(model, guide, x, register=True)

    return best, svi


def pyro_step_fn(vae: VAE):
    """Pyro's fastest eager step (see :func:`pyro_step_fns`)."""
    return pyro_step_fns(vae)[0]


def _time(fn, reps: int) -> float:
    t0 = time.process_time()
    for _ in range(reps):
        fn()
    return (time.process_time() - t0) / reps


def _mean_se(xs):
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else float("inf"))


#: claims are decided on the mean per-round ratio with this many standard errors of margin
MARGIN_K = 2.0
OVERHEAD_GOAL = 1.3


def run(*, quick: bool = False, full: bool = False, seed: int = 0, out=None, progress: bool = True, jobs: int = 1,
        resume: bool = False) -> Result:
    torch.manual_seed(seed)
    batches = [64, 256, 1024]
    rounds, reps = (10, 5) if quick else ((40, 10) if full else (20, 10))
    data = digits_data()
    vae = VAE()
    prog = programmed_elbo(vae)
    res = Result("pvi", title="Programmed vs hand-written ELBO gradient (MLP VAE, digits) and vs Pyro Trace_ELBO")
    load0 = os.getloadavg()[0]
    try:
        import pyro
        pyro_best, pyro_svi = pyro_step_fns(vae)
    except ImportError:
        pyro = pyro_best = pyro_svi = None
        res.add_note("pyro-ppl not installed: the Pyro columns are skipped")
    res.meta.update(rounds=rounds, reps_per_round=reps, torch_threads=torch.get_num_threads(),
                    cpu_count=os.cpu_count())
    overheads, pyro_ratios = {}, {}
    was_validating = pyro.poutine.util.is_validation_enabled() if pyro else False
    if pyro:
        pyro.enable_validation(False)
    try:
        for B in batches:
            x = data[:B] if B <= data.shape[0] else data[torch.randint(0, data.shape[0], (B,))]

            def hand():
                vae.zero_grad(set_to_none=True)
                (-hand_elbo(vae, x)).backward()

            def programmed():
                vae.zero_grad(set_to_none=True)
                (-prog.surrogate(x)).backward()

            fns = {"hand": hand, "programmed": programmed}
            if pyro:
                def py_best():
                    vae.zero_grad(set_to_none=True)
                    pyro_best(x)

                def py_svi():
                    vae.zero_grad(set_to_none=True)
                    pyro_svi(x)
                fns.update(pyro=py_best, pyro_svi=py_svi)
            for f in fns.values():
                f()  # warm-up
            t = {k: [] for k in fns}
            for _ in range(rounds):
                for k, f in fns.items():
                    t[k].append(_time(f, reps))
            med = {k: statistics.median(v) for k, v in t.items()}
            ov_m, ov_se = _mean_se([p / h for p, h in zip(t["programmed"], t["hand"])])
            overheads[B] = (ov_m, ov_se)
            row = dict(batch=B, hand_ms=round(1e3 * med["hand"], 3), programmed_ms=round(1e3 * med["programmed"], 3),
                       overhead=round(ov_m, 3), overhead_se=round(ov_se, 3),
                       overhead_of_medians=round(med["programmed"] / med["hand"], 3))
            if pyro:
                r_m, r_se = _mean_se([y / p for y, p in zip(t["pyro"], t["programmed"])])
                s_m, s_se = _mean_se([y / p for y, p in zip(t["pyro_svi"], t["programmed"])])
                pyro_ratios[B] = (r_m, r_se)
                row.update(pyro_ms=round(1e3 * med["pyro"], 3), pyro_over_programmed=round(r_m, 3),
                           pyro_over_programmed_se=round(r_se, 3), pyro_svi_ms=round(1e3 * med["pyro_svi"], 3),
                           pyro_svi_over_programmed=round(s_m, 3), pyro_svi_over_programmed_se=round(s_se, 3))
            res.add_row(**row)
        # same quantity: the programmed surrogate, the hand-written ELBO and Pyro's loss give identical
        # gradients under the same noise
        x = data[:64]
        params = list(vae.parameters())
        torch.manual_seed(123)
        g1 = torch.autograd.grad(hand_elbo(vae, x), params)
        torch.manual_seed(123)
        g2 = torch.autograd.grad(prog.surrogate(x), params)
        same = all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(g1, g2))
        res.add_claim("programmed ELBO gradient equals the hand-written one under the same noise", same)
        if pyro:
            vae.zero_grad(set_to_none=True)
            torch.manual_seed(123)
            pyro_best(x)
            g3 = [-p.grad for p in params]
            same_py = all(torch.allclose(a, b, rtol=1e-4, atol=1e-5) for a, b in zip(g1, g3))
            vae.zero_grad(set_to_none=True)
            res.add_claim("Pyro's step computes the same gradient under the same noise (same model, fair timing)",
                          same_py)
    finally:
        if pyro:
            pyro.enable_validation(was_validating)
    load1 = os.getloadavg()[0]
    res.meta.update(load_avg_start=load0, load_avg_end=load1)
    res.add_note(f"1-min load average {load0:.2f} at the start, {load1:.2f} at the end "
                 f"({os.cpu_count()} CPUs); ratios are per round, mean ± s.e. over {rounds} rounds")
    worst = max(m + MARGIN_K * se for m, se in overheads.values())
    res.add_claim(f"overhead of the programmed ELBO gradient <= {OVERHEAD_GOAL}x at every batch size "
                  f"(mean + {MARGIN_K} s.e.; paper: minimal overhead)", worst <= OVERHEAD_GOAL,
                  ", ".join(f"B={b}: {m:.3f} ± {se:.3f}x" for b, (m, se) in overheads.items()))
    if pyro_ratios:
        res.add_claim(f"faster than Pyro Trace_ELBO (best eager setting) at every batch size (Pyro/programmed "
                      f"mean - {MARGIN_K} s.e. > 1)",
                      min(m - MARGIN_K * se for m, se in pyro_ratios.values()) > 1.0,
                      ", ".join(f"B={b}: Pyro {m:.3f} ± {se:.3f}x the time" for b, (m, se) in pyro_ratios.items()))
    return res
