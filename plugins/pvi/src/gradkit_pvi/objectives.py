"""Variational objectives written as programs (ELBO, IWAE, HVI, IWHVI, DIWHVI, reweighted wake-sleep).

* ``model_logpdf(choices) -> log p(x, z)``: the model's log joint at the guide's named choices (data
  closed over), with the particle shape of the choices.
* ``guide``: a program ``guide(ctx, *params)`` sampling named sites (its estimators are those of its
  primitives), or a :func:`marginal` of one (hierarchical guide with an estimated density).

Every objective returns a program; wrap it with :func:`gradkit_pvi.adev.expectation`.

==========  ==========================================================================================
ELBO        ``E_q[log p(x, z) − log q(z)]``
IWAE(K)     ``E[log (1/K) Σ_k p(x, z_k)/q(z_k)]``, ``z_k ~ q`` independent
HVI         ELBO with ``q = marginal(q(u, z), keep=z, n=1)``:  ``log q̂(z) = log q(z | u)``
IWHVI(N,K)  ``q̂(z) = (1/N)[q(z | u_1) + Σ_{i≥2} q(z | u_i)]``, ``(u_1, z) ~ q``, ``u_i ~ q(u)``:
            ``1/q̂`` is unbiased for ``1/q(z)``, so ``p/q̂`` is unbiased for ``p/q`` and
            ``log (1/K) Σ_k p/q̂_k`` lower-bounds ``log p(x)``; K = 1: IWHVI, K > 1: DIWHVI
q_wake(N)   ``Σ_i w̄_i log q(z_i)`` with ``z_i ~ sg(q)``, ``w̄ = softmax(log p(x, z_i) − log q(z_i))`` (sg)
p_wake(N)   ``Σ_i w̄_i log p(x, z_i)``, same particles and weights
==========  ==========================================================================================
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Sequence

import torch

from .adev import Context, reduce_logps

__all__ = ["Marginal", "marginal", "elbo", "iwae", "hvi", "iwhvi", "diwhvi", "q_wake", "p_wake"]


class Marginal:
    """``q(z)`` of a program ``q(u, z)`` with the auxiliary choices ``u`` marginalised by conditional SIR
    with ``n`` particles (the true ``u`` is particle 1, the others are fresh draws of the program's own
    prior over ``u``)."""

    def __init__(self, program: Callable, keep: Sequence[str], n: int = 1):
        if not callable(program):
            raise TypeError("marginal: program must be callable")
        if isinstance(keep, str) or not keep:
            raise ValueError("marginal: keep must be a non-empty list of site names")
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"marginal: n must be a positive integer, got {n!r}")
        self.program, self.keep, self.n = program, list(keep), n

    def sample(self, ctx: Context, *params):
        scope = _scoped(ctx, self.program, {}, params)
        missing = [k for k in self.keep if k not in scope["choices"]]
        if missing:
            raise ValueError(f"marginal: kept names {missing} were never sampled by the program")
        kept = {k: scope["choices"][k] for k in self.keep}
        parts = [[scope["lps"][k] for k in self.keep]]  # log q(z | u_true)
        for _ in range(self.n - 1):
            parts.append(_scoped(ctx, self.program, kept, params)["w_list"])  # log q(z | u_i), u_i ~ q(u)
        n = self.n

        def logq_hat(shape):
            lw = torch.stack([reduce_logps(p, shape) for p in parts])
            return torch.logsumexp(lw, 0) - math.log(n)

        return kept, _Lazy(logq_hat)


def marginal(program: Callable, keep: Sequence[str], n: int = 1) -> Marginal:
    return Marginal(program, keep, n)


def _scoped(ctx: Context, program, constraints, params):
    ctx._scopes.append({"constraints": dict(constraints), "choices": {}, "lps": {}, "lp_list": [],
                        "w_list": []})
    try:
        program(ctx, *params)
    finally:
        scope = ctx._scopes.pop()
    missing = set(constraints) - set(scope["choices"])
    if missing:
        raise ValueError(f"constrained names {sorted(missing)} were never sampled by the program")
    return scope


class _Lazy:
    """Log density of a guide draw, summed to the model's particle shape when that is known."""

    def __init__(self, parts):
        self.parts = parts

    def to(self, shape):
        if callable(self.parts):
            return self.parts(shape)
        return reduce_logps(self.parts, shape)


def _guide(ctx: Context, guide, params):
    if isinstance(guide, Marginal):
        return guide.sample(ctx, *params)
    if not callable(guide):
        raise TypeError(f"guide must be a program or a marginal(...), got {type(guide).__name__}")
    scope = _scoped(ctx, guide, {}, params)
    if not scope["choices"]:
        raise ValueError("the guide sampled no named site: name its latent choices (ctx.sample(..., name=...))")
    return scope["choices"], _Lazy(scope["lp_list"])


def _lw(model_logpdf, z, logq):
    lp = _logp(model_logpdf, z)
    return lp - (logq.to(lp.shape) if isinstance(logq, _Lazy) else logq)


def _check_model(model_logpdf):
    if not callable(model_logpdf):
        raise TypeError(f"model_logpdf must be callable(choices) -> log p(x, z), got {type(model_logpdf).__name__}")


def _logp(model_logpdf, choices):
    lp = model_logpdf(choices)
    if not isinstance(lp, torch.Tensor):
        raise TypeError(f"model_logpdf must return a tensor, got {type(lp).__name__}")
    return lp


def elbo(model_logpdf: Callable, guide) -> Callable:
    _check_model(model_logpdf)

    def program(ctx, *params):
        z, logq = _guide(ctx, guide, params)
        return _lw(model_logpdf, z, logq)

    return program


def iwae(model_logpdf: Callable, guide, K: int) -> Callable:
    _check_model(model_logpdf)
    if not isinstance(K, int) or isinstance(K, bool) or K < 1:
        raise ValueError(f"iwae: K must be a positive integer, got {K!r}")

    def program(ctx, *params):
        lw = []
        for _ in range(K):
            z, logq = _guide(ctx, guide, params)
            lw.append(_lw(model_logpdf, z, logq))
        lw = torch.stack(torch.broadcast_tensors(*lw))
        return torch.logsumexp(lw, 0) - math.log(K)

    return program


def hvi(model_logpdf: Callable, program: Callable, keep: Sequence[str]) -> Callable:
    return elbo(model_logpdf, marginal(program, keep, 1))


def iwhvi(model_logpdf: Callable, program: Callable, keep: Sequence[str], N: int, K: int = 1) -> Callable:
    return iwae(model_logpdf, marginal(program, keep, N), K)


def diwhvi(model_logpdf: Callable, program: Callable, keep: Sequence[str], N: int, K: int) -> Callable:
    if not isinstance(K, int) or K < 2:
        raise ValueError(f"diwhvi: K must be >= 2 (K = 1 is iwhvi), got {K!r}")
    return iwae(model_logpdf, marginal(program, keep, N), K)


def _sir(ctx, model_logpdf, guide, params, N):
    if not isinstance(N, int) or isinstance(N, bool) or N < 1:
        raise ValueError(f"wake-sleep: N must be a positive integer, got {N!r}")
    if isinstance(guide, Marginal) or not callable(guide):
        raise TypeError("wake-sleep needs a guide program with named sites")
    dparams = tuple(p.detach() if isinstance(p, torch.Tensor) else p for p in params)
    zs, lws = [], []
    for _ in range(N):
        z, logq = _guide(ctx, guide, dparams)
        z = {k: v.detach() for k, v in z.items()}
        zs.append(z)
        lws.append(_lw(model_logpdf, z, logq).detach())
    wbar = torch.softmax(torch.stack(torch.broadcast_tensors(*lws)), 0)
    return zs, wbar


def q_wake(model_logpdf: Callable, guide: Callable, N: int) -> Callable:
    """Wake update of the guide (maximise): ``Σ_i w̄_i log q(z_i)`` over an SIR(N) population."""
    _check_model(model_logpdf)

    def program(ctx, *params):
        zs, wbar = _sir(ctx, model_logpdf, guide, params, N)
        total = 0.0
        shape = wbar.shape[1:]
        for i, z in enumerate(zs):
            scope = _scoped(ctx, guide, z, params)
            total = total + wbar[i] * reduce_logps(scope["w_list"], shape)
        return total

    return program


def p_wake(model_logpdf: Callable, guide: Callable, N: int) -> Callable:
    """Wake update of the model (maximise): ``Σ_i w̄_i log p(x, z_i)`` over the same SIR(N) population."""
    _check_model(model_logpdf)

    def program(ctx, *params):
        zs, wbar = _sir(ctx, model_logpdf, guide, params, N)
        total = 0.0
        for i, z in enumerate(zs):
            total = total + wbar[i] * _logp(model_logpdf, z)
        return total

    return program
