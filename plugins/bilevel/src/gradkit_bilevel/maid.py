"""MAID — Method of Adaptive Inexact Descent (Salehi, Mukherjee, Roberts, Ehrhardt; arXiv:2308.10098).

One outer iteration k (up to ``max_bt`` tries j = 0, 1, …):

1. **Inexact hypergradient(ε, δ).** FISTA on ``h(·, θ_k)`` until ``‖∇_x h(x̃)‖/μ ≤ ε``; CG on
   ``A(x̃) q = ∇g(x̃)`` to residual ``δ``; ``p = −B(x̃)ᵀ q``; a-posteriori bound ω
   (:func:`gradkit_bilevel.core.error_bound`).  While ``ω/‖p‖ > 1 − η``: ``ε ← τε, δ ← τδ`` and recompute.
2. **Inexact backtracking**, i = 0 … (10 + j) − 1: ``θ⁺ = θ − βρⁱ p``, FISTA at ``θ⁺`` to ε (warm start x̃) giving x⁺.
   Accept if
   ``g(x⁺) + ‖∇g(x⁺)‖ε + L_g ε²/2 − (g(x̃) − ‖∇g(x̃)‖ε − L_g ε²/2) ≤ −βρⁱ η² ‖p‖²``
   (an upper bound of f(θ⁺) minus a lower bound of f(θ_k): a certified decrease of the true f).
   Then ``β ← βρⁱ``.
3. success: ``ε ← νε, δ ← νδ, β ← (10/9)β``; failure: ``ε ← τε, δ ← τδ`` and retry.
   Stop when the work budget (every product) is spent, at a certified small hypergradient (``gtol``), at a
   negligible decrease (``ftol``) or when the accuracies reach their float64 floor (see :class:`MAID`).

``fixed_eps=True`` is the paper's fixed-accuracy variant (no change of ε, δ; backtracking up to 5 + j).
"""

from __future__ import annotations

import math
from typing import Optional, Union

import torch

from .core import (BilevelProblem, BilevelResult, Counter, KnownConstants, OnlineConstants, _as_tensor, _nonneg,
                   _positive, fista, inexact_hypergradient, new_history, record)


def _check_unit(v, name, lo=0.0, hi=1.0):
    v = float(v)
    if not (lo < v < hi):
        raise ValueError(f"{name} must lie in ({lo}, {hi}), got {v}")
    return v


class MAID:
    """MAID solver (kind ``solvers``): ``MAID(**options).solve(problem) -> BilevelResult``.

    Options (paper/official-code defaults): ``eps=0.1, delta=0.1`` (initial accuracies), ``eta=1e-4``,
    ``rho=0.9`` (backtracking factor), ``tau=0.5`` (accuracy decrease), ``nu=1.05`` (accuracy increase on
    success), ``beta=0.1`` (initial step), ``max_bt=3`` (tries per outer iteration), ``max_iter=100`` (outer
    iterations), ``constants`` (``"online"``, a :class:`KnownConstants` / :class:`OnlineConstants` instance),
    ``fixed_eps=False``, ``step_growth=10/9``, ``bt_base=10`` (backtracking runs ``bt_base + j`` trial steps).

    Work and stopping (scipy-style; ``BilevelResult.stop_reason`` says which rule ended the run):

    * ``budget=1e6``: every product counts — lower-level gradients, CG Hessian-vector products and the extra
      products of the constant estimation (``Counter.work``); no FISTA or CG call may run past what is left.
      ``ll_budget`` (default None) caps the lower-level gradient evaluations alone as well.
    * ``gtol=1e-6``: stop (``"gtol"``) when the certified bound on the true hypergradient norm,
      ``‖p‖ + ω ≥ ‖∇f(θ)‖``, is at most ``gtol``.
    * ``ftol=0`` (off): stop (``"ftol"``) when an accepted step lowers the upper-level value by at most
      ``ftol · max(|g_k|, |g_k+1|, 1)`` (L-BFGS-B's rule).  Off by default: MAID's certified steps can be
      short (its step grows by only 10/9 per success), so a small relative decrease does not mean stationarity
      (with L-BFGS-B's 2.2e-9 it stopped a ridge problem at ‖∇f‖ = 5e-3 where gtol reaches 7e-7).
    * ``eps_rtol=1e-10``: relative floor of the accuracies, ``ε ≥ eps_rtol·(1 + ‖x̃‖)``,
      ``δ ≥ eps_rtol·(1 + ‖∇g(x̃)‖)`` (and never below ``min_eps``).  When the accuracy test or the line search
      would need accuracies below the floor, the hypergradient cannot be told apart from its own error in
      float64: stop (``"accuracy_floor"``) instead of spinning.  A line search that fails with the accuracies
      already at the floor resumes from its last trial step (``beta ← beta·rho^tries``; the official code keeps
      beta, which can stall for good when beta is far above 1/L_f); it stops (``"accuracy_floor"``) once the
      step can no longer move θ in float64.
    """

    name = "maid"

    def __init__(self, *, eps: float = 1e-1, delta: float = 1e-1, eta: float = 1e-4, rho: float = 0.9,
                 tau: float = 0.5, nu: float = 1.05, beta: float = 0.1, max_bt: int = 3, budget: float = 1e6,
                 ll_budget: Optional[float] = None, max_iter: int = 100, constants: Union[str, KnownConstants] = "online",
                 fixed_eps: bool = False, step_growth: float = 10 / 9, bt_base: Optional[int] = None,
                 min_eps: float = 1e-14, eps_rtol: float = 1e-10, gtol: float = 1e-6, ftol: float = 0.0,
                 ll_max_iter: int = 100000, cg_max_iter: int = 10000, seed: int = 0):
        self.eps = _positive(eps, "eps")
        self.delta = _positive(delta, "delta")
        self.eta = _check_unit(eta, "eta")
        self.rho = _check_unit(rho, "rho")
        self.tau = _check_unit(tau, "tau")
        self.nu = float(nu)
        if not (math.isfinite(self.nu) and self.nu >= 1.0):
            raise ValueError(f"nu must be a finite number >= 1 (accuracy is relaxed after a successful step), got {nu}")
        self.beta = _positive(beta, "beta")
        if int(max_bt) < 1:
            raise ValueError(f"max_bt must be a positive integer, got {max_bt}")
        self.max_bt = int(max_bt)
        self.budget = _positive(budget, "budget")
        self.ll_budget = float("inf") if ll_budget is None else _positive(ll_budget, "ll_budget")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
        self.max_iter = int(max_iter)
        if isinstance(constants, str):
            if constants != "online":
                raise ValueError(f"constants must be 'online' or a KnownConstants instance, got {constants!r}")
            constants = OnlineConstants(seed=seed)
        elif not isinstance(constants, KnownConstants):
            raise TypeError(f"constants must be 'online' or a KnownConstants/OnlineConstants instance, "
                            f"got {type(constants).__name__}")
        self.constants = constants
        self.fixed_eps = bool(fixed_eps)
        self.step_growth = _positive(step_growth, "step_growth")
        self.bt_base = int(bt_base) if bt_base is not None else (5 if self.fixed_eps else 10)
        self.min_eps = _positive(min_eps, "min_eps")
        self.eps_rtol = _nonneg(eps_rtol, "eps_rtol")
        self.gtol = _nonneg(gtol, "gtol")
        self.ftol = _nonneg(ftol, "ftol")
        self.ll_max_iter = int(ll_max_iter)
        self.cg_max_iter = int(cg_max_iter)

    # -------------------------------------------------------------------------
    def _left(self, counter, budget, ll_budget) -> int:
        """Products one call may still spend: the rest of the total budget and of the lower-level one."""
        return int(max(1, min(budget - counter.work, ll_budget - counter.ll)))

    def _spent(self, counter, budget, ll_budget) -> bool:
        return counter.work >= budget or counter.ll >= ll_budget

    def sufficient_decrease(self, g_new: float, gn_new: float, g_old: float, gn_old: float, eps: float,
                            Lg: float, step: float, p_norm: float) -> bool:
        """The inexact sufficient-decrease test of step 2 (see module docstring)."""
        upper_new = g_new + gn_new * eps + Lg * eps ** 2 / 2
        lower_old = g_old - gn_old * eps - Lg * eps ** 2 / 2
        return upper_new - lower_old <= -step * self.eta ** 2 * p_norm ** 2

    def solve(self, problem: BilevelProblem, theta0: Optional[torch.Tensor] = None, *,
              max_iter: Optional[int] = None, budget: Optional[float] = None, ll_budget: Optional[float] = None,
              callback=None) -> BilevelResult:
        if not isinstance(problem, BilevelProblem):
            raise TypeError(f"problem must be a gradkit_bilevel.BilevelProblem, got {type(problem).__name__}")
        max_iter = self.max_iter if max_iter is None else int(max_iter)
        budget = self.budget if budget is None else _positive(budget, "budget")
        ll_budget = self.ll_budget if ll_budget is None else _positive(ll_budget, "ll_budget")
        theta = problem.theta0.clone() if theta0 is None else _as_tensor(theta0, "theta0")
        x = problem.x0.clone()
        q = None
        eps, delta, beta = self.eps, self.delta, self.beta
        counter = Counter()
        hist = new_history()
        hist.update(bt_fail=[], hg=[], trace=[])   # trace: (event, eps, delta, beta) after every change
        consts = self.constants
        g0, _ = problem.upper_value_grad(x)
        record(hist, counter, theta=theta, loss=g0, eps=eps, delta=delta, step=beta)
        stop = "max_iter"
        for k in range(max_iter):
            if self._spent(counter, budget, ll_budget):
                stop = "budget"
                break
            accepted = False
            for j in range(self.max_bt):
                # 1. inexact hypergradient with the a-posteriori accuracy test
                while True:
                    hg = inexact_hypergradient(problem, theta, x, eps, delta, counter, q_init=q, consts=consts,
                                               ll_max_iter=self.ll_max_iter, cg_max_iter=self.cg_max_iter,
                                               work_left=self._left(counter, budget, ll_budget))
                    x, q = hg.x, hg.q
                    pn = float(torch.linalg.vector_norm(hg.p))
                    hist["hg"].append((eps, delta, hg.omega, pn))
                    ratio = hg.omega / pn if pn > 0 else (0.0 if hg.omega == 0 else float("inf"))
                    eps_floor = max(self.min_eps, self.eps_rtol * (1 + float(torch.linalg.vector_norm(hg.x))))
                    delta_floor = max(self.min_eps, self.eps_rtol * (1 + float(torch.linalg.vector_norm(hg.grad_g))))
                    if self.fixed_eps or ratio <= 1 - self.eta or self._spent(counter, budget, ll_budget):
                        break
                    if eps <= eps_floor and delta <= delta_floor:
                        stop = "accuracy_floor"
                        break
                    eps, delta = max(self.tau * eps, eps_floor), max(self.tau * delta, delta_floor)
                    hist["trace"].append(("bound", eps, delta, beta))
                if stop == "accuracy_floor" or self._spent(counter, budget, ll_budget):
                    break
                if pn == 0:
                    stop = "zero_hypergradient"
                    break
                if pn + (0.0 if hg.omega != hg.omega else hg.omega) <= self.gtol:
                    stop = "gtol"
                    break
                # 2. inexact backtracking
                gn_old = float(torch.linalg.vector_norm(hg.grad_g))
                for i in range(self.bt_base + j):
                    step = beta * self.rho ** i
                    th_new = theta - step * hg.p
                    x_new, n = fista(lambda z: problem.grad_lower_x(z, th_new), x, problem.mu(th_new),
                                     problem.L(th_new), eps,
                                     max_iter=min(self.ll_max_iter, self._left(counter, budget, ll_budget)))
                    counter.ll += n
                    g_new, gg_new = problem.upper_value_grad(x_new)
                    if self.sufficient_decrease(g_new, float(torch.linalg.vector_norm(gg_new)), hg.g, gn_old, eps,
                                                problem.Lg, step, pn):
                        accepted = True
                        theta, x = th_new, x_new
                        beta = step
                        break
                    if self._spent(counter, budget, ll_budget):
                        break
                if accepted:
                    record(hist, counter, theta=theta, loss=g_new, eps=eps, delta=delta, step=beta,
                           omega=hg.omega, grad_norm=pn)
                    hist["trace"].append(("accept", eps, delta, beta))
                    if hg.g - g_new <= self.ftol * max(abs(hg.g), abs(g_new), 1.0):
                        stop = "ftol"
                    if not self.fixed_eps:
                        eps, delta = self.nu * eps, self.nu * delta
                    beta = beta * self.step_growth
                    hist["trace"].append(("relax", eps, delta, beta))
                    break
                hist["bt_fail"].append(k)
                if self._spent(counter, budget, ll_budget):
                    break
                if not self.fixed_eps:
                    if eps <= eps_floor and delta <= delta_floor:
                        # the accuracies cannot be tightened any further: what is left to reduce is the step.
                        # Resume the line search where it stopped (beta * rho^tries) -- unless the step can no
                        # longer move theta in float64, which is stationarity at the attainable accuracy.
                        beta = beta * self.rho ** (self.bt_base + j)
                        th_norm = float(torch.linalg.vector_norm(theta))
                        if beta * pn <= 1e-15 * (1.0 + th_norm):
                            stop = "accuracy_floor"
                            break
                        hist["trace"].append(("bt_shrink", eps, delta, beta))
                        continue
                    eps, delta = max(self.tau * eps, eps_floor), max(self.tau * delta, delta_floor)
                hist["trace"].append(("bt_fail", eps, delta, beta))
            if not accepted and stop in ("max_iter",):
                # iteration without progress: keep θ, log the current accuracies
                record(hist, counter, theta=theta, loss=hist["loss"][-1], eps=eps, delta=delta, step=beta,
                       accepted=False)
            if callback is not None:
                callback(k, theta, hist)
            if stop != "max_iter":
                break
        if stop == "max_iter" and self._spent(counter, budget, ll_budget):
            stop = "budget"
        return BilevelResult(theta=theta, x=x, history=hist, counter=counter, stop_reason=stop)


class MAIDFixedEps(MAID):
    """MAID with fixed accuracies ε, δ (the paper's fixed-accuracy baseline); backtracking as MAID's."""

    name = "maid-fixed-eps"

    def __init__(self, **kw):
        kw.setdefault("eps", 1e-3)
        kw.setdefault("delta", kw["eps"])
        super().__init__(fixed_eps=True, **kw)
