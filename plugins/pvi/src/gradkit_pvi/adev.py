"""Programmable gradient estimators for probabilistic programs (a reverse-mode port of ADEV).

A *program* is a Python callable ``program(ctx, *args)`` that draws every random choice through
``ctx.sample(primitive, *args, name=None)``, may add costs with ``ctx.add_cost(w)`` and returns a
tensor ``r``.  Its *value* is ``E[Σ costs + r]``.  The value may be batched: the returned tensor has a
"particle shape" ``S`` (``()`` or ``(P,)`` …); every site's value has shape ``S + event`` and every
cost broadcasts to ``S``.  :class:`Expectation` turns a program into

* ``estimate(*args)``: an unbiased estimate of the value (mean over the particle shape), and
* ``surrogate(*args)``: a scalar whose ``.backward()`` gives an unbiased estimate of the gradient of
  the value with respect to every tensor the program uses (same first-order result as ADEV's
  forward-mode transform followed by transposition).

Each primitive carries its own gradient estimator:

========================  ===================================================================
kind                      surrogate contribution at a site with continuation value ``V``
========================  ===================================================================
reparameterisation        none: the value is ``rsample``-d and gradients flow through it
REINFORCE (baseline b)    ``sg(V − b) · (log p(v) − sg log p(v))``
measure-valued (flip)     ``Σ_e (p_e − sg p_e) · sg(±(V − V̄_e))`` with ``V̄_e`` the continuation
                          re-executed with coordinate ``e`` flipped (``+`` if ``v_e = 1``)
enumeration               the continuation surrogate becomes ``Σ_c P(c) · S_c`` over all values
                          ``c`` of the site, each branch ``S_c`` a re-execution forcing ``c``
========================  ===================================================================

Continuations are evaluated by **re-execution with replay**: the program is run again with the
first ``k`` sites replayed (their tensors, graph included), site ``k`` forced, and fresh randomness
after it.  The program must therefore be deterministic given its sampled values (all randomness
through ``ctx``) and sample the same sites in the same order given the same prefix.

Costs and REINFORCE terms use the *continuation* value (costs added after the site, plus the
return value); earlier costs are constants given the history, so leaving them out keeps the
estimator unbiased and lowers its variance.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

__all__ = [
    "Primitive", "Context", "Expectation", "expectation", "average",
    "normal_reparam", "normal_reinforce", "mvnormal_diag_reparam", "uniform", "flip_enum", "flip_mvd",
    "flip_reinforce", "categorical_enum", "categorical_reinforce", "geometric_reinforce", "beta_implicit",
    "baseline", "reinforce", "PRIMITIVES", "get_primitive",
]

MAX_ENUM_CONFIGS = 4096


def _minmax(x: torch.Tensor) -> Tuple[float, float]:
    """(min, max) of ``x`` as floats, NaN if ``x`` holds a NaN.  One reduction: ``torch.isfinite(x).all()``
    costs ~6 kernels on CPU, and these checks run at every ``ctx.sample``."""
    if x.numel() == 0:
        return 0.5, 0.5  # nothing to check: a value inside every range tested here (std > 0, p in [0, 1])
    lo, hi = torch.aminmax(x.detach())
    return lo.item(), hi.item()


def _finite(lo: float, hi: float) -> bool:
    return -math.inf < lo and hi < math.inf  # False for NaN


def _check_finite(name: str, x: torch.Tensor) -> Tuple[float, float]:
    lo, hi = _minmax(x)
    if not _finite(lo, hi):
        raise ValueError(f"{name}: parameters must be finite, got NaN/inf in {tuple(x.shape)} tensor")
    return lo, hi


def _to_float_tensor(x, name: str, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        t = x
    elif isinstance(x, (int, float)) and not isinstance(x, bool):
        t = torch.tensor(float(x), dtype=ref.dtype if ref is not None else torch.get_default_dtype())
    else:
        raise TypeError(f"{name}: expected a tensor or a float, got {type(x).__name__}")
    if not torch.is_floating_point(t):
        t = t.to(torch.get_default_dtype())
    return t


def _as_tensor(x, name: str, ref: Optional[torch.Tensor] = None) -> torch.Tensor:
    t = _to_float_tensor(x, name, ref)
    _check_finite(name, t)
    return t


def _check_broadcast(name: str, a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        try:
            torch.broadcast_shapes(a.shape, b.shape)
        except RuntimeError as e:
            raise ValueError(f"{name}: {what} {tuple(a.shape)} and {tuple(b.shape)} do not broadcast") from e


# --------------------------------------------------------------------------------------------------
# primitives
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Primitive:
    """A stochastic primitive: a sampler, its log-density and the gradient estimator it carries.

    ``estimator`` is one of ``"reparam"``, ``"reinforce"``, ``"mvd"``, ``"enum"``.
    ``dist(*params)`` builds a ``torch.distributions`` object; ``prepare(*args)`` checks and converts
    the arguments (clear errors for NaN, out-of-range and mismatched shapes).
    """

    name: str
    estimator: str
    prepare: Callable[..., Tuple[torch.Tensor, ...]]
    dist: Callable[..., torch.distributions.Distribution]
    event_dims: int = 0
    support: Optional[Callable[..., List[torch.Tensor]]] = None  # enum: values to enumerate
    baseline: Optional[Any] = None
    #: reparameterised primitives may give ``fast(*params) -> (value, log_prob_fn)``: a sample drawn without
    #: building a ``torch.distributions`` object, and a thunk for the log-density *of that fresh sample*
    #: computed from its standard noise (as a hand-written estimator does; same value and gradient as
    #: ``dist(*params).log_prob(value)``).  Replayed / forced / constrained values use ``dist``.
    fast: Optional[Callable[..., Tuple[torch.Tensor, Callable[[], torch.Tensor]]]] = None

    def sample(self, *params):
        d = self.dist(*params)
        if self.estimator == "reparam":
            return d.rsample()
        return d.sample()

    def log_prob(self, value, *params) -> torch.Tensor:
        lp = self.dist(*params).log_prob(value)
        return lp


def _prep_normal(name):
    def prep(mu, sigma):
        mu = _as_tensor(mu, f"{name} mean")
        sigma = _to_float_tensor(sigma, f"{name} std", mu)
        lo, _ = _check_finite(f"{name} std", sigma)
        if lo <= 0:
            raise ValueError(f"{name}: std must be > 0")
        _check_broadcast(name, mu, sigma, "mean and std of shapes")
        return mu, sigma
    return prep


def _prep_prob(name):
    def prep(p):
        p = _to_float_tensor(p, f"{name} probability")
        lo, hi = _check_finite(f"{name} probability", p)
        if lo < 0 or hi > 1:
            raise ValueError(f"{name}: probability must lie in [0, 1]")
        return (p,)
    return prep


def _prep_probs(name):
    def prep(probs):
        probs = _as_tensor(probs, f"{name} probabilities")
        if probs.dim() < 1 or probs.shape[-1] < 2:
            raise ValueError(f"{name}: probabilities need a last dimension of >= 2 categories, got {tuple(probs.shape)}")
        if (probs.detach() < 0).any() or not torch.allclose(probs.detach().sum(-1), torch.ones(()), atol=1e-5):
            raise ValueError(f"{name}: probabilities must be >= 0 and sum to 1 over the last dimension")
        return (probs,)
    return prep


def _prep_uniform(a=0.0, b=1.0):
    a = _as_tensor(a, "uniform low")
    b = _as_tensor(b, "uniform high", a)
    _check_broadcast("uniform", a, b, "low and high of shapes")
    if (b.detach() <= a.detach()).any():
        raise ValueError("uniform: high must be > low")
    return a, b


def _prep_beta(a, b):
    a = _to_float_tensor(a, "beta_implicit concentration1")
    b = _to_float_tensor(b, "beta_implicit concentration0", a)
    lo_a, _ = _check_finite("beta_implicit concentration1", a)
    lo_b, _ = _check_finite("beta_implicit concentration0", b)
    if lo_a <= 0 or lo_b <= 0:
        raise ValueError("beta_implicit: concentrations must be > 0")
    return a, b


def _prep_geom(p):
    p = _to_float_tensor(p, "geometric_reinforce probability")
    lo, hi = _check_finite("geometric_reinforce probability", p)
    if lo <= 0 or hi > 1:
        raise ValueError("geometric_reinforce: probability must lie in (0, 1]")
    return (p,)


_D = torch.distributions


def _nv(cls):
    """``cls`` with argument validation off (``prepare`` already checked the parameters)."""
    return lambda *a: cls(*a, validate_args=False)


class _Uniform(_D.Uniform):
    arg_constraints = {}  # low/high may carry gradients; checked in prepare


_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def _noise_shape(mu, sigma):
    return mu.shape if mu.shape == sigma.shape else torch.broadcast_shapes(mu.shape, sigma.shape)


def _normal_fast(mu, sigma):
    eps = torch.randn(_noise_shape(mu, sigma), dtype=mu.dtype, device=mu.device)
    return mu + sigma * eps, lambda: -0.5 * eps ** 2 - sigma.log() - _HALF_LOG_2PI


def _mvn_diag_fast(mu, sigma):
    eps = torch.randn(_noise_shape(mu, sigma), dtype=mu.dtype, device=mu.device)
    return mu + sigma * eps, lambda: (-0.5 * eps ** 2 - sigma.log()).sum(-1) - eps.shape[-1] * _HALF_LOG_2PI


def _mvn_diag(mu, sigma):
    return _D.Independent(_D.Normal(mu, sigma, validate_args=False), 1, validate_args=False)


def _flip_support(p):
    return [torch.zeros_like(p), torch.ones_like(p)]


def _cat_support(probs):
    k = probs.shape[-1]
    return [torch.full(probs.shape[:-1], float(c), dtype=probs.dtype) for c in range(k)]


normal_reparam = Primitive("normal_reparam", "reparam", _prep_normal("normal_reparam"), _nv(_D.Normal),
                           fast=_normal_fast)
normal_reinforce = Primitive("normal_reinforce", "reinforce", _prep_normal("normal_reinforce"), _nv(_D.Normal))
mvnormal_diag_reparam = Primitive("mvnormal_diag_reparam", "reparam", _prep_normal("mvnormal_diag_reparam"),
                                  _mvn_diag, event_dims=1, fast=_mvn_diag_fast)
uniform = Primitive("uniform", "reparam", _prep_uniform, lambda a, b: _Uniform(a, b, validate_args=False))
beta_implicit = Primitive("beta_implicit", "reparam", _prep_beta, _nv(_D.Beta))  # torch: implicit reparam gradients
flip_enum = Primitive("flip_enum", "enum", _prep_prob("flip_enum"), lambda p: _D.Bernoulli(probs=p, validate_args=False),
                      support=_flip_support)
flip_mvd = Primitive("flip_mvd", "mvd", _prep_prob("flip_mvd"), lambda p: _D.Bernoulli(probs=p, validate_args=False))
flip_reinforce = Primitive("flip_reinforce", "reinforce", _prep_prob("flip_reinforce"),
                           lambda p: _D.Bernoulli(probs=p, validate_args=False))
categorical_enum = Primitive("categorical_enum", "enum", _prep_probs("categorical_enum"),
                             lambda probs: _D.Categorical(probs=probs, validate_args=False), support=_cat_support)
categorical_reinforce = Primitive("categorical_reinforce", "reinforce", _prep_probs("categorical_reinforce"),
                                  lambda probs: _D.Categorical(probs=probs, validate_args=False))
geometric_reinforce = Primitive("geometric_reinforce", "reinforce", _prep_geom, lambda p: _D.Geometric(probs=p, validate_args=False))


def baseline(prim: Primitive, b) -> Primitive:
    """REINFORCE primitive ``prim`` with control variate ``b`` (a float or a tensor broadcasting to the
    particle shape; a tensor is used as a constant, ``sg(b)``; train a learned baseline separately)."""
    if not isinstance(prim, Primitive) or prim.estimator != "reinforce":
        raise TypeError(f"baseline() needs a REINFORCE primitive, got {getattr(prim, 'name', prim)!r}")
    b = _as_tensor(b, "baseline")
    return Primitive(prim.name + "+baseline", "reinforce", prim.prepare, prim.dist, prim.event_dims,
                     baseline=b)


def reinforce(name: str, dist_fn: Callable[..., torch.distributions.Distribution], event_dims: int = 0) -> Primitive:
    """A REINFORCE primitive from any ``torch.distributions`` constructor ``dist_fn(*params)``."""
    def prep(*args):
        return tuple(_as_tensor(a, f"{name} parameter") for a in args)
    return Primitive(name, "reinforce", prep, dist_fn, event_dims)


PRIMITIVES: Dict[str, Primitive] = {p.name: p for p in [
    normal_reparam, normal_reinforce, mvnormal_diag_reparam, uniform, beta_implicit, flip_enum, flip_mvd,
    flip_reinforce, categorical_enum, categorical_reinforce, geometric_reinforce]}


def get_primitive(name: str) -> Primitive:
    try:
        return PRIMITIVES[name]
    except KeyError:
        raise ValueError(f"unknown primitive {name!r}; known: {sorted(PRIMITIVES)}") from None


# --------------------------------------------------------------------------------------------------
# execution
# --------------------------------------------------------------------------------------------------
@dataclass
class _Site:
    prim: Primitive
    params: Tuple[torch.Tensor, ...]
    value: torch.Tensor
    name: Optional[str]
    fresh: bool  # sampled in this run (not replayed / forced)


@dataclass
class _Cost:
    after: int  # number of sites sampled before the cost was added
    w: torch.Tensor


class _Replay(Exception):
    pass


class Context:
    """Handed to a program: ``sample``, ``add_cost``, and sub-program helpers (``simulate``,
    ``generate``).  Created by :class:`Expectation`; not built by users."""

    def __init__(self, prefix: Sequence[torch.Tensor] = (), forced: Optional[torch.Tensor] = None):
        self._prefix = list(prefix)
        self._forced = forced
        self.sites: List[_Site] = []
        self.costs: List[_Cost] = []
        self._scopes: List[Dict[str, Any]] = []

    # -- primitives -------------------------------------------------------------------------------
    def sample(self, prim, *args, name: Optional[str] = None):
        if isinstance(prim, str):
            prim = get_primitive(prim)
        if not isinstance(prim, Primitive):
            raise TypeError(f"ctx.sample: unknown primitive {prim!r} ({type(prim).__name__}); use one of "
                            f"{sorted(PRIMITIVES)} or a Primitive built by baseline()/reinforce()")
        params = prim.prepare(*args)
        scope = self._scopes[-1] if self._scopes else None
        if scope is not None and name is not None and name in scope["constraints"]:
            v = scope["constraints"][name]
            if not isinstance(v, torch.Tensor):
                v = torch.as_tensor(v, dtype=params[0].dtype)
            lp = prim.log_prob(v, *params)
            scope.setdefault("w_list", []).append(lp)
            scope["choices"][name] = v
            scope.setdefault("lps", {})[name] = lp
            return v
        k = len(self.sites)
        d = lp_fn = None
        if k < len(self._prefix):
            v, fresh = self._prefix[k], False
        elif k == len(self._prefix) and self._forced is not None:
            v, fresh = self._forced, False
        elif prim.estimator == "enum":  # main path: the first value of the support (branches add the rest)
            d = prim.dist(*params)
            v = prim.support(*params)[0]
            v, fresh = v.expand(torch.broadcast_shapes(v.shape, d.batch_shape)).clone(), True
        elif prim.fast is not None:
            (v, lp_fn), fresh = prim.fast(*params), True
        else:
            d = prim.dist(*params)
            v, fresh = (d.rsample() if prim.estimator == "reparam" else d.sample()), True
        self.sites.append(_Site(prim, params, v, name, fresh))
        if scope is not None:
            lp = lp_fn() if lp_fn is not None else (d if d is not None else prim.dist(*params)).log_prob(v)
            scope.setdefault("lp_list", []).append(lp)
            if name is not None:
                scope["choices"][name] = v
                scope.setdefault("lps", {})[name] = lp
        return v

    def add_cost(self, w) -> None:
        w = _as_tensor(w, "add_cost")
        self.costs.append(_Cost(len(self.sites), w))

    # -- sub-programs (generative-function style) ---------------------------------------------------
    def simulate(self, program: Callable, *args):
        """Run ``program(ctx, *args)`` inline; return ``(retval, choices, log p(choices))``, the log
        density summed over the sub-program's sites (shape of each site's log-prob, summed by the caller)."""
        self._scopes.append({"constraints": {}, "choices": {}})
        try:
            ret = program(self, *args)
        finally:
            scope = self._scopes.pop()
        return ret, scope["choices"], _sum_broadcast(scope.get("lp_list", []), "simulate")

    def generate(self, program: Callable, constraints: Dict[str, Any], *args):
        """Run ``program`` with the named sites in ``constraints`` fixed to the given values; the other
        sites are sampled (with their estimators).  Returns ``(retval, choices, log_weight)`` with
        ``log_weight`` the log density of the constrained sites (importance weight under the
        program's own prior as proposal)."""
        self._scopes.append({"constraints": dict(constraints), "choices": {}})
        try:
            ret = program(self, *args)
        finally:
            scope = self._scopes.pop()
        missing = set(constraints) - set(scope["choices"])
        if missing:
            raise ValueError(f"generate: constrained names {sorted(missing)} were never sampled by the program")
        return ret, scope["choices"], _sum_broadcast(scope.get("w_list", []), "generate")


def _sum_broadcast(lps, what: str):
    """Sum of site log-densities (broadcasting); ``0.0`` if there are none."""
    total = 0.0
    for lp in lps:
        if isinstance(total, torch.Tensor) and total.shape != lp.shape:
            try:
                torch.broadcast_shapes(total.shape, lp.shape)
            except RuntimeError:
                raise ValueError(f"{what}: site log-densities of shapes {tuple(total.shape)} and {tuple(lp.shape)} "
                                 f"do not broadcast; sum event dimensions or use objectives' particle shapes") from None
        total = lp if isinstance(total, float) else total + lp
    return total


def _broadcasts_to(a: torch.Size, shape: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(a, shape) == shape
    except RuntimeError:
        return False


def reduce_logps(lps, shape, what: str = "log density") -> torch.Tensor:
    """Sum site log-densities, each reduced to the particle shape ``shape`` (event dims summed)."""
    total = None
    for lp in lps:
        t = _sum_to(lp, shape, what)
        total = t if total is None else total + t
    return torch.zeros(shape) if total is None else total


def _sum_to(x: torch.Tensor, shape: torch.Size, what: str) -> torch.Tensor:
    """Sum the trailing (event) dimensions of ``x`` down to the particle shape ``shape``."""
    shape = tuple(shape)
    if tuple(x.shape[: len(shape)]) == shape:
        return x.reshape(*shape, -1).sum(-1) if x.dim() > len(shape) else x
    if x.dim() <= len(shape):
        try:
            return x.expand(shape)
        except RuntimeError:
            pass
    raise ValueError(f"{what}: shape {tuple(x.shape)} is not the program's particle shape {shape} "
                     f"followed by event dimensions")


class Expectation:
    """``E[program]`` with per-primitive gradient estimators (see the module docstring)."""

    def __init__(self, program: Callable):
        if not callable(program):
            raise TypeError(f"expectation() needs a callable program(ctx, *args), got {type(program).__name__}")
        self.program = program
        self.reexecutions = 0

    # -- one run ----------------------------------------------------------------------------------
    def _run(self, args, prefix=(), forced=None):
        ctx = Context(prefix, forced)
        r = self.program(ctx, *args)
        if not isinstance(r, torch.Tensor):
            if isinstance(r, (int, float)) and not isinstance(r, bool):
                r = torch.tensor(float(r))
            else:
                raise TypeError(f"a program must return a tensor (its value), got {type(r).__name__}")
        if not torch.is_floating_point(r):
            raise TypeError(f"a program must return a floating tensor, got dtype {r.dtype}")
        if torch.isnan(r.detach()).any():
            raise ValueError("the program's value is NaN (check the model / guide parameters and log-densities)")
        return ctx, r

    def _path(self, args, prefix=(), forced=None, start: int = 0):
        """Run with replay; return (S, V): surrogate and value of the continuation after site ``start-1``
        (``start=0``: the whole program), with particle shape of the return value."""
        ctx, r = self._run(args, prefix, forced)
        if start and len(ctx.sites) < start:
            raise ValueError("replay diverged: the program sampled fewer sites after replaying its prefix "
                             "(programs must be deterministic given their sampled values)")
        shape = r.shape
        S = r
        V = r.detach()
        if not ctx.costs and all(s.prim.estimator == "reparam" for s in ctx.sites):
            return S, V  # nothing to add: gradients flow through the reparameterised samples
        events: List[Tuple[str, int, Any]] = [("site", i, s) for i, s in enumerate(ctx.sites)]
        events += [("cost", c.after, c) for c in ctx.costs]
        # reverse order: a cost added after j sites comes after site j-1 and before site j
        events.sort(key=lambda e: (e[1] - (0.5 if e[0] == "cost" else 0.0)))
        for kind, idx, ev in reversed(events):
            if kind == "cost":
                if ev.after < start:
                    continue
                w = ev.w
                try:
                    w = w.expand(shape) if w.shape != shape else w
                except RuntimeError:
                    raise ValueError(f"add_cost: shape {tuple(ev.w.shape)} does not broadcast to the program's "
                                     f"particle shape {tuple(shape)}") from None
                S = S + w
                V = V + w.detach()
                continue
            if idx < start:
                break
            site: _Site = ev
            est = site.prim.estimator
            if est == "reparam":
                continue
            if site.value.shape[: len(shape)] != shape:
                raise ValueError(f"site {idx} ({site.prim.name}) has shape {tuple(site.value.shape)}; every "
                                 f"non-reparameterised site must have the program's particle shape "
                                 f"{tuple(shape)} as leading dims (expand its parameters)")
            if est == "reinforce":
                lp = _sum_to(site.prim.log_prob(site.value, *site.params), shape, site.prim.name)
                b = site.prim.baseline
                if b is not None and b.shape != shape and not _broadcasts_to(b.shape, shape):
                    raise ValueError(f"{site.prim.name}: baseline of shape {tuple(b.shape)} does not broadcast to "
                                     f"the program's particle shape {tuple(shape)}")
                adv = V - (b.detach() if b is not None else 0.0)
                S = S + adv * (lp - lp.detach())
            elif est == "mvd":
                S = S + self._mvd(args, ctx, idx, site, shape, V)
            elif est == "enum":
                S, V = self._enum(args, ctx, idx, site, shape, S, V)
            else:  # pragma: no cover - primitives are built here
                raise ValueError(f"unknown estimator {est!r}")
        return S, V

    def _prefix(self, ctx, idx):
        return [s.value for s in ctx.sites[:idx]]

    def _mvd(self, args, ctx, idx, site, shape, V):
        (p,) = site.params
        v = site.value
        p = p.expand(v.shape)
        flat_v = v.reshape(*shape, -1) if v.dim() > len(shape) else v.reshape(*shape, 1)
        n = flat_v.shape[-1]
        total = 0.0
        prefix = self._prefix(ctx, idx)
        for e in range(n):
            fv = flat_v.clone()
            fv[..., e] = 1.0 - fv[..., e]
            with torch.no_grad():
                self.reexecutions += 1
                _, Vbar = self._path(args, prefix, fv.reshape(v.shape), start=idx + 1)
            pe = p.reshape(*shape, -1)[..., e] if v.dim() > len(shape) else p.reshape(shape)
            ve = flat_v[..., e]
            diff = torch.where(ve > 0.5, V - Vbar, Vbar - V)
            total = total + (pe - pe.detach()) * diff.detach()
        return total

    def _enum(self, args, ctx, idx, site, shape, S, V):
        params = site.params
        support = site.prim.support(*params)
        v0 = site.value
        d = site.prim.dist(*params)
        if site.prim.name == "flip_enum" and v0.dim() > len(shape):
            n = int(torch.tensor(v0.shape[len(shape):]).prod())
            if 2 ** n > MAX_ENUM_CONFIGS:
                raise ValueError(f"flip_enum: {n} Bernoulli coordinates per particle give 2**{n} branches "
                                 f"(> {MAX_ENUM_CONFIGS}); use flip_mvd or split the site")
            configs = []
            for bits in itertools.product([0.0, 1.0], repeat=n):
                c = torch.tensor(bits, dtype=v0.dtype).reshape(v0.shape[len(shape):]).expand(v0.shape)
                configs.append(c)
        else:
            configs = [c.expand(v0.shape) for c in support]
        weights = [_sum_to(d.log_prob(c), shape, site.prim.name).exp() for c in configs]
        S_tot = weights[0] * S
        V_tot = weights[0].detach() * V
        prefix = self._prefix(ctx, idx)
        for c, w in zip(configs[1:], weights[1:]):
            self.reexecutions += 1
            Sb, Vb = self._path(args, prefix, c.clone(), start=idx + 1)
            S_tot = S_tot + w * Sb
            V_tot = V_tot + w.detach() * Vb
        return S_tot, V_tot

    # -- public -----------------------------------------------------------------------------------
    def surrogate(self, *args) -> torch.Tensor:
        """A scalar whose gradient is an unbiased estimate of ∇ E[program] (mean over particles)."""
        S, _ = self._path(args)
        return S.mean()

    def value_and_surrogate(self, *args) -> Tuple[torch.Tensor, torch.Tensor]:
        S, V = self._path(args)
        return V.mean(), S.mean()

    def surrogate_and_values(self, *args) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(surrogate, V)``: the surrogate scalar and the per-particle value estimates (detached), e.g.
        the regression targets of a learned REINFORCE baseline (``V`` is the continuation value of a
        site at the start of the program)."""
        S, V = self._path(args)
        return S.mean(), V

    def estimate(self, *args) -> torch.Tensor:
        """An unbiased estimate of E[program] (no gradient)."""
        with torch.no_grad():
            _, V = self._path(args)
        return V.mean()

    def grad_estimate(self, *params: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Unbiased gradient estimate with respect to the tensors ``params`` (passed to the program)."""
        for i, p in enumerate(params):
            if not isinstance(p, torch.Tensor) or not p.requires_grad:
                raise TypeError(f"grad_estimate: argument {i} must be a tensor with requires_grad=True")
        s = self.surrogate(*params)
        grads = torch.autograd.grad(s, params, allow_unused=True)
        return tuple(torch.zeros_like(p) if g is None else g for p, g in zip(params, grads))


def expectation(program: Callable) -> Expectation:
    return Expectation(program)


def average(program: Callable, n: int) -> Callable:
    """The program that runs ``program`` ``n`` times (independent randomness) and averages the values."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"average: n must be a positive integer, got {n!r}")

    def averaged(ctx, *args):
        total = 0.0
        for _ in range(n):
            before = len(ctx.costs)
            r = program(ctx, *args)
            total = total + r / n
            for c in ctx.costs[before:]:
                c.w = c.w / n
        return total

    return averaged
