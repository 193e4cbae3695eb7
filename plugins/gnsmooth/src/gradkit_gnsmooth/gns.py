"""Algorithm 1 of "Gradient-Normalized Smoothness for Optimization with Approximate Hessians"
(Semenov, Jaggi, Doikov, 2025): gradient-regularized Newton with an adaptive γ.

Given ``x_k``, ``g_k = ∇f(x_k)``, the dual norm ``‖g‖_* = (gᵀB⁻¹g)^{1/2}`` and an exact
or approximate Hessian ``H_k``, repeat (at most ``max_search`` = 40 times):

1. ``λ_k = ‖g_k‖_* / γ_k``                     (the code adds ε = 1e-8 to γ_k)
2. ``Δ = -(H_k + λ_k B)⁻¹ g_k``                 (Cholesky; Sherman–Morrison if H_k is rank one)
3. evaluate ``f`` and ``g`` at ``x_k + Δ``
4. accept iff ``f(x_k) - f(x_k + Δ) ≥ ‖∇f(x_k + Δ)‖_*² / (8 λ_k)``; then ``γ ← max(2γ, γ_min)``
5. otherwise ``γ ← γ/2`` and retry.

``x_{k+1} = x_k + Δ``.  As in the official code, the last trial step is applied even
when all 40 searches failed; the history flags such iterations (``forced``).

:class:`GradNormSmoothSolver` runs it on a problem given by functions of a float64
vector; :class:`GradNormSmooth` is the same method as a full-batch
``torch.optim.Optimizer`` whose ``step(closure)`` re-evaluates the closure at every trial point.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import attrs
import torch

from .hessians import DTYPE, RankOne

HessianLike = Union[torch.Tensor, RankOne]


# ---------------------------------------------------------------------- linear algebra
class NotPositiveDefinite(ValueError):
    """``H + λB`` is not positive definite: the search treats it as a rejected trial (γ halves, λ grows)."""


#: the acceptance constant of Algorithm 1: accept iff f(x) - f(x+Δ) >= ‖∇f(x+Δ)‖²_* / (ACCEPT * λ)
ACCEPT = 8.0


def _finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_hyperparameters(*, lr=None, gamma0=None, gamma_min=None, eps=None, max_search=None, where="") -> None:
    """Clear ``ValueError`` for NaN/inf or out-of-range hyperparameters (shared by solver and optimizer)."""
    if lr is not None and not (_finite(lr) and lr >= 0):
        raise ValueError(f"{where}lr must be a finite number >= 0, got {lr!r}")
    if gamma0 is not None and not (_finite(gamma0) and gamma0 > 0):
        raise ValueError(f"{where}gamma0 must be a finite number > 0, got {gamma0!r}")
    if gamma_min is not None and not (_finite(gamma_min) and gamma_min >= 0):
        raise ValueError(f"{where}gamma_min must be a finite number >= 0, got {gamma_min!r}")
    if eps is not None and not (_finite(eps) and eps >= 0):
        raise ValueError(f"{where}eps must be a finite number >= 0, got {eps!r}")
    if max_search is not None and not (isinstance(max_search, int) and not isinstance(max_search, bool)
                                       and max_search >= 1):
        raise ValueError(f"{where}max_search must be a positive integer, got {max_search!r}")


def newton_step(H: HessianLike, g: torch.Tensor, lam: float, B: Optional[torch.Tensor] = None,
                Binv: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``Δ = -(H + λB)⁻¹ g`` in float64.

    ``H`` dense: Cholesky of ``H + λB``; :class:`NotPositiveDefinite` (a ``ValueError``)
    if that matrix is not positive definite.  ``H`` a :class:`RankOne` ``αvvᵀ``: Sherman–Morrison,
    ``(αvvᵀ + λB)⁻¹ = P - α P v vᵀ P / (1 + α vᵀPv)`` with ``P = B⁻¹/λ``.
    """
    n = g.shape[0]
    if isinstance(H, RankOne):
        Binv_ = torch.eye(n, dtype=DTYPE) if Binv is None and B is None else (Binv if Binv is not None else torch.linalg.inv(B))
        Pg = (Binv_ @ g) / lam
        Pv = (Binv_ @ H.v) / lam
        denom = 1.0 + H.alpha * float(H.v @ Pv)
        if not denom > 0:
            raise NotPositiveDefinite(f"H + λB is not positive definite (Sherman–Morrison denominator {denom:.3e} <= 0)")
        return -(Pg - (H.alpha / denom) * Pv * float(H.v @ Pg))
    if H.shape != (n, n):
        raise ValueError(f"Hessian has shape {tuple(H.shape)}, expected ({n}, {n}) for {n} variables")
    M = H + lam * (B if B is not None else torch.eye(n, dtype=DTYPE))
    L, info = torch.linalg.cholesky_ex(M)
    if int(info) != 0 or not torch.isfinite(L).all():
        raise NotPositiveDefinite(f"H + λB is not positive definite (Cholesky failed at pivot {int(info)}, "
                                  f"λ={lam:.3e})")
    return -torch.cholesky_solve(g[:, None], L).squeeze(1)


def _dual_norm_sqr(g: torch.Tensor, Binv: Optional[torch.Tensor]) -> float:
    return float(g @ g) if Binv is None else float(g @ (Binv @ g))


# ---------------------------------------------------------------------- search (shared)
@attrs.define
class SearchOutcome:
    delta: torch.Tensor
    f_new: float
    g_new: torch.Tensor
    gamma: float
    lam: float
    trials: int
    accepted: bool
    #: function/gradient evaluations (a trial whose H + λB is not positive definite evaluates nothing)
    evaluations: int = 0


def adaptive_search(f_k: float, g_k: torch.Tensor, H: HessianLike, gamma: float,
                    evaluate: Callable[[torch.Tensor], Any], *, B=None, Binv=None, gamma_min: float = 1e-9,
                    max_search: int = 40, adaptive: bool = True, eps: float = 1e-8) -> SearchOutcome:
    """Steps 1-5 of Algorithm 1 for one iteration.  ``evaluate(Δ) -> (f, g)`` at ``x_k + Δ``.

    A trial whose ``H + λB`` is not positive definite (an indefinite exact Hessian of a non-convex
    model) is a rejected trial: γ halves, so λ grows until ``H + λB`` is positive definite.  If no
    trial of the search had a positive definite system there is no step to apply: ``ValueError``.
    """
    g_norm = math.sqrt(_dual_norm_sqr(g_k, Binv))
    delta = f_new = g_new = lam = None
    evals = 0
    for i in range(max_search):
        lam = g_norm / (gamma + eps)
        try:
            trial = newton_step(H, g_k, lam, B, Binv)
        except NotPositiveDefinite:
            if not adaptive:
                raise
            gamma *= 0.5
            continue
        delta = trial
        f_new, g_new = evaluate(delta)
        evals += 1
        f_new = float(f_new)
        if not adaptive:
            return SearchOutcome(delta, f_new, g_new, gamma, lam, i + 1, True, evals)
        if f_k - f_new >= _dual_norm_sqr(g_new, Binv) / (ACCEPT * lam):
            return SearchOutcome(delta, f_new, g_new, max(2.0 * gamma, gamma_min), lam, i + 1, True, evals)
        gamma *= 0.5
    if delta is None:
        raise ValueError(f"H + λB was not positive definite in any of the {max_search} trials (last λ={lam:.3e}); "
                         "the Hessian has a very negative eigenvalue: use a positive semidefinite approximation "
                         "or a larger max_search")
    # all searches failed: the official code still applies the last trial step
    return SearchOutcome(delta, f_new, g_new, gamma, lam, max_search, False, evals)


# ---------------------------------------------------------------------- solver
@attrs.define
class SolveResult:
    x: torch.Tensor
    f: float
    status: str
    history: Dict[str, List[float]]

    @property
    def iterations(self) -> int:
        return len(self.history["func"]) - 1


class Problem:
    """A smooth objective on float64 vectors.

    ``func(x)`` returns a scalar; ``grad(x)`` and ``hess(x)`` default to autograd.
    Subclasses override any of them (the problems in :mod:`gradkit_gnsmooth.problems`
    do, with closed forms).
    """

    def __init__(self, func: Optional[Callable] = None, grad: Optional[Callable] = None,
                 hess: Optional[Callable] = None):
        if func is not None:
            self.func = func  # type: ignore[method-assign]
        if grad is not None:
            self.grad = grad  # type: ignore[method-assign]
        if hess is not None:
            self.hess = hess  # type: ignore[method-assign]

    def func(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - must be given
        raise TypeError("a Problem needs func(x)")

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(self.func(x), x)
        return g.detach()

    def hess(self, x: torch.Tensor) -> torch.Tensor:
        return torch.autograd.functional.hessian(self.func, x.detach())


def as_problem(problem: Any) -> Problem:
    if isinstance(problem, Problem):
        return problem
    if callable(problem) and not hasattr(problem, "func"):
        return Problem(func=problem)
    if hasattr(problem, "func") and callable(problem.func):
        return Problem(func=problem.func, grad=getattr(problem, "grad", None), hess=getattr(problem, "hess", None))
    raise TypeError(f"problem must be a callable f(x) on a float64 vector or an object with func(x) "
                    f"(and optionally grad(x), hess(x)); got {type(problem).__name__}")


class GradNormSmoothSolver:
    """Algorithm 1 on a problem of float64 vectors.

    ``hessian``: ``"exact"`` (``problem.hess``, autograd by default), ``"zero"``
    (``H = 0``: the gradient-normalized gradient method with the same search), or a
    callable ``hessian(x) -> (n, n) tensor | RankOne`` (an approximation from
    :mod:`gradkit_gnsmooth.hessians`).  ``B`` is the metric (identity by default).
    Stops when ``f - f_star < tol`` (if ``f_star`` is given), ``‖g‖_* < grad_tol``, or after ``max_iters``.
    """

    def __init__(self, *, hessian: Union[str, Callable] = "exact", gamma0: float = 1.0, gamma_min: float = 1e-9,
                 max_search: int = 40, max_iters: int = 1000, adaptive: bool = True, B=None,
                 f_star: Optional[float] = None, tol: float = 1e-8, grad_tol: Optional[float] = None,
                 eps: float = 1e-8, time_limit: Optional[float] = None):
        if not (callable(hessian) or hessian in ("exact", "zero")):
            raise ValueError(f"hessian must be 'exact', 'zero' or a callable x -> matrix; got {hessian!r}")
        check_hyperparameters(gamma0=gamma0, gamma_min=gamma_min, eps=eps, max_search=max_search)
        if not (_finite(tol) and tol > 0):
            raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
        if grad_tol is not None and not (_finite(grad_tol) and grad_tol > 0):
            raise ValueError(f"grad_tol must be a finite number > 0 or None, got {grad_tol!r}")
        if not (isinstance(max_iters, int) and max_iters >= 0):
            raise ValueError(f"max_iters must be a non-negative integer, got {max_iters!r}")
        self.hessian, self.gamma0, self.gamma_min = hessian, float(gamma0), float(gamma_min)
        self.max_search, self.max_iters, self.adaptive = max_search, max_iters, bool(adaptive)
        self.B = None if B is None else torch.as_tensor(B, dtype=DTYPE)
        self.Binv = None if self.B is None else torch.linalg.inv(self.B)
        self.f_star, self.tol, self.grad_tol, self.eps = f_star, float(tol), grad_tol, float(eps)
        self.time_limit = time_limit

    def _hess(self, problem: Problem, x: torch.Tensor) -> HessianLike:
        if self.hessian == "exact":
            return torch.as_tensor(problem.hess(x), dtype=DTYPE)
        if self.hessian == "zero":
            return torch.zeros(x.shape[0], x.shape[0], dtype=DTYPE)
        H = self.hessian(x)
        return H if isinstance(H, RankOne) else torch.as_tensor(H, dtype=DTYPE)

    def solve(self, problem: Any, x0: Any) -> SolveResult:
        problem = as_problem(problem)
        x = torch.as_tensor(x0, dtype=DTYPE).detach().clone()
        if x.dim() != 1:
            raise ValueError(f"x0 must be a vector, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("x0 contains NaN or inf")
        f = float(problem.func(x))
        g = torch.as_tensor(problem.grad(x), dtype=DTYPE)
        if not math.isfinite(f) or not torch.isfinite(g).all():
            raise ValueError(f"f or its gradient is not finite at x0 (f={f})")
        gamma = self.gamma0
        hist: Dict[str, List[float]] = {k: [] for k in ("func", "grad_norm", "gamma", "time", "grad_calls",
                                                        "trials", "forced")}
        calls = 1
        t0 = time.perf_counter()
        status = "iterations_exceeded"
        for k in range(self.max_iters + 1):
            gn = math.sqrt(_dual_norm_sqr(g, self.Binv))
            hist["func"].append(f)
            hist["grad_norm"].append(gn)
            hist["gamma"].append(gamma)
            hist["time"].append(time.perf_counter() - t0)
            hist["grad_calls"].append(calls)
            if (self.f_star is not None and f - self.f_star < self.tol) or (self.grad_tol is not None and gn < self.grad_tol):
                status = f"success, {k} iters"
                break
            if k == self.max_iters or (self.time_limit is not None and hist["time"][-1] > self.time_limit):
                status = "iterations_exceeded" if k == self.max_iters else "time_limit"
                break
            H = self._hess(problem, x)

            def evaluate(d, _x=x):
                xt = _x + d
                return float(problem.func(xt)), torch.as_tensor(problem.grad(xt), dtype=DTYPE)

            out = adaptive_search(f, g, H, gamma, evaluate, B=self.B, Binv=self.Binv, gamma_min=self.gamma_min,
                                  max_search=self.max_search, adaptive=self.adaptive, eps=self.eps)
            calls += out.evaluations
            hist["trials"].append(out.trials)
            hist["forced"].append(0.0 if out.accepted else 1.0)
            x = x + out.delta
            f, g, gamma = out.f_new, out.g_new, out.gamma
        return SolveResult(x, f, status, hist)


# ---------------------------------------------------------------------- optimizer
#: key of the optimizer-level state (γ, step count, last search) in ``GradNormSmooth.state``
STATE_KEY = "gns"


class GradNormSmooth(torch.optim.Optimizer):
    """Algorithm 1 as a full-batch ``torch.optim.Optimizer``; ``step`` requires a closure.

    Ordinary non-convex networks train with ``hessian="exact"``: where ``H + λB`` is not
    positive definite the trial is rejected (γ halves, λ grows) as when the decrease test fails.

    All parameters with a gradient form one flat float64 vector ``x``.  Each
    ``step(closure)`` evaluates ``f`` and ``∇f`` (the closure, which should zero the
    gradients, compute the loss, call ``backward()`` and return the loss), builds the
    Hessian, and runs the adaptive search, re-evaluating the closure at each trial
    point.  Hyperparameters (per group, in ``defaults``): ``lr`` scales the applied
    step of that group (1 = the paper's method; 0 freezes the group),
    ``gamma0``, ``gamma_min``, ``max_search``, ``eps``.  State: ``gamma`` (the
    adaptive γ, kept across steps) and ``step`` live in optimizer-level state,
    ``opt.state["gns"]`` (not in a parameter's state, so a parameter that stops
    receiving gradients does not restart γ).

    ``hessian``:
      * ``"exact"`` — exact Hessian by double backward.  Needs a closure that
        returns the loss *without* calling ``backward()`` (its graph is used), or
        that calls ``backward(create_graph=True)``;
      * ``"zero"`` — ``H = 0`` (gradient-normalized gradient step, any closure);
      * a callable ``hessian(params) -> (n, n) tensor | RankOne`` over the flat
        vector of the parameters that have gradients (any closure).
    """

    def __init__(self, params, lr: float = 1.0, gamma0: float = 1.0, gamma_min: float = 1e-9, max_search: int = 40,
                 eps: float = 1e-8, hessian: Union[str, Callable] = "exact"):
        if not (callable(hessian) or hessian in ("exact", "zero")):
            raise ValueError(f"hessian must be 'exact', 'zero' or a callable params -> matrix; got {hessian!r}")
        check_hyperparameters(lr=lr, gamma0=gamma0, gamma_min=gamma_min, eps=eps, max_search=max_search,
                              where="GradNormSmooth: ")
        super().__init__(params, dict(lr=lr, gamma0=gamma0, gamma_min=gamma_min, max_search=max_search, eps=eps))
        self.hessian = hessian

    def add_param_group(self, param_group):
        # torch.optim.Optimizer.__init__ routes every group through here as well
        check_hyperparameters(**{k: param_group[k] for k in ("lr", "gamma0", "gamma_min", "eps", "max_search")
                                 if k in param_group}, where="GradNormSmooth: param group ")
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if p.is_sparse or p.is_complex():
                self.param_groups.pop()
                if p.is_sparse:
                    raise TypeError("GradNormSmooth does not support sparse parameters")
                raise TypeError(f"GradNormSmooth needs real parameters; got a complex parameter of shape "
                                f"{tuple(p.shape)}")

    # -- helpers -----------------------------------------------------------
    def _active(self):
        return [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]

    def _flat_grad(self, active) -> torch.Tensor:
        return torch.cat([p.grad.detach().reshape(-1).to(DTYPE) for _, p in active])

    def _evaluate(self, closure, exact: bool, create_graph: bool = False):
        """Run the closure; in exact mode compute the gradients ourselves from its graph."""
        with torch.enable_grad():
            loss = closure()
            if loss is None:
                raise ValueError("GradNormSmooth: the closure must return the loss")
            if exact:
                params = [p for g in self.param_groups for p in g["params"] if p.requires_grad]
                if not isinstance(loss, torch.Tensor) or loss.grad_fn is None:
                    raise ValueError("hessian='exact' needs the closure to return the loss tensor with its "
                                     "autograd graph (do not detach it)")
                try:
                    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
                except RuntimeError as exc:
                    raise ValueError("hessian='exact' needs a closure that returns the loss without calling "
                                     "backward() (gradients and Hessian are taken from its graph); "
                                     f"autograd said: {exc}") from exc
                for p, g in zip(params, grads):
                    p.grad = None if g is None else (g if create_graph else g.detach())
        return loss

    def _exact_hessian(self, active) -> torch.Tensor:
        params = [p for _, p in active]
        gflat = torch.cat([p.grad.reshape(-1) for p in params])
        n = gflat.numel()
        H = torch.zeros(n, n, dtype=DTYPE)
        for i in range(n):
            if gflat[i].grad_fn is None:
                continue
            row = torch.autograd.grad(gflat[i], params, retain_graph=True, allow_unused=True)
            H[i] = torch.cat([(torch.zeros_like(p) if r is None else r).reshape(-1).to(DTYPE)
                              for r, p in zip(row, params)])
        return 0.5 * (H + H.T)

    def _check_finite(self, f: float, gflat: torch.Tensor, active) -> None:
        if not math.isfinite(f):
            raise ValueError(f"GradNormSmooth: the loss is not finite ({f}); expected a finite scalar loss")
        if not torch.isfinite(gflat).all():
            i = int((~torch.isfinite(gflat)).nonzero()[0])
            index = {id(p): (gi, pi) for gi, g in enumerate(self.param_groups) for pi, p in enumerate(g["params"])}
            for _, p in active:
                if i < p.numel():
                    gi, pi = index[id(p)]
                    raise ValueError(f"GradNormSmooth: non-finite gradient (NaN/inf) in param_groups[{gi}]"
                                     f"['params'][{pi}] of shape {tuple(p.shape)}; expected finite gradients")
                i -= p.numel()

    # -- the step -----------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], torch.Tensor]] = None):
        if closure is None:
            raise RuntimeError("GradNormSmooth.step() requires a closure that re-evaluates the loss "
                               "(it tests every trial point); call opt.step(closure)")
        exact = self.hessian == "exact"
        loss = self._evaluate(closure, exact, create_graph=exact)
        active = self._active()
        if not active:
            return loss
        f_k = float(loss.detach())
        g_k = self._flat_grad(active)
        self._check_finite(f_k, g_k, active)
        if exact:
            with torch.enable_grad():
                H = self._exact_hessian(active)
            for _, p in active:
                p.grad = p.grad.detach()
        elif self.hessian == "zero":
            H = torch.zeros(g_k.numel(), g_k.numel(), dtype=DTYPE)
        else:
            H = self.hessian([p for _, p in active])
            H = H if isinstance(H, RankOne) else torch.as_tensor(H, dtype=DTYPE)
        group0 = self.param_groups[0]
        # γ belongs to the method, not to a parameter: optimizer-level state under a string key (torch's
        # state_dict keeps non-tensor keys as they are), so it survives parameters that stop getting gradients
        st = self.state[STATE_KEY] if STATE_KEY in self.state else {"gamma": float(group0["gamma0"]), "step": 0}
        x0 = [p.detach().clone() for _, p in active]
        scales = torch.cat([torch.full((p.numel(),), float(g["lr"]), dtype=DTYPE) for g, p in active])

        def set_point(delta: torch.Tensor) -> None:
            i = 0
            for (_, p), p0 in zip(active, x0):
                n = p.numel()
                p.copy_(p0 + (scales[i : i + n] * delta[i : i + n]).view_as(p).to(p.dtype))
                i += n

        def evaluate(delta):
            set_point(delta)
            l = self._evaluate(closure, exact)
            return float(l.detach()), self._flat_grad(active)

        try:
            out = adaptive_search(f_k, g_k, H, st["gamma"], evaluate, gamma_min=float(group0["gamma_min"]),
                                  max_search=int(group0["max_search"]), eps=float(group0["eps"]))
        except Exception:
            set_point(torch.zeros_like(g_k))  # a failed step leaves the parameters where they were
            raise
        self.state[STATE_KEY] = st
        # leave the parameters at the applied point; its gradient is in p.grad already unless the
        # last evaluation was not the applied one (it always is: the search returns its last trial)
        st["gamma"] = out.gamma
        st["step"] += 1
        st["last_trials"] = out.trials
        st["last_forced"] = not out.accepted
        return loss.detach() if isinstance(loss, torch.Tensor) else loss
