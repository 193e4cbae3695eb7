"""Baselines the paper compares MAID with.

* :class:`HOAG` — Pedregosa (ICML 2016): at iteration k solve the lower level and the linear system to
  ``ε_k = ε₀ / k^{power}`` (summable for power > 1; the paper's comparison uses 1.1), step ``θ ← θ − p/L``
  with a fixed step ``1/L``.
* :class:`HypergradientDescent` — fixed accuracy ε = δ and fixed step (``exact=True`` uses the problem's
  closed-form hypergradient, for problems that have one, e.g. :class:`~gradkit_bilevel.problems.QuadraticBilevel`).
* :class:`GridSearch` — evaluate the upper loss on a tensor grid of θ (lower level solved to ε at each point).

All share MAID's lower-level solver (FISTA, warm-started), CG (warm-started) and work counters.
"""

from __future__ import annotations

import itertools
from typing import Optional, Sequence

import torch

from .core import (BilevelProblem, BilevelResult, Counter, _positive, fista, inexact_hypergradient, new_history,
                   record)


def _check_problem(problem):
    if not isinstance(problem, BilevelProblem):
        raise TypeError(f"problem must be a gradkit_bilevel.BilevelProblem, got {type(problem).__name__}")


class _FixedStepHG:
    """Shared loop of the fixed-step baselines; subclasses define ``accuracy(k) -> (eps_k, delta_k)``."""

    name = "hypergradient-descent"

    def __init__(self, *, step: float, max_iter: int = 100, budget: float = 1e6, ll_budget: Optional[float] = None,
                 ll_max_iter: int = 100000, cg_max_iter: int = 10000):
        self.step = _positive(step, "step")
        if int(max_iter) < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter}")
        self.max_iter = int(max_iter)
        self.budget = _positive(budget, "budget")
        self.ll_budget = float("inf") if ll_budget is None else _positive(ll_budget, "ll_budget")
        self.ll_max_iter = int(ll_max_iter)
        self.cg_max_iter = int(cg_max_iter)

    def solve(self, problem: BilevelProblem, theta0: Optional[torch.Tensor] = None, *,
              max_iter: Optional[int] = None, budget: Optional[float] = None, ll_budget: Optional[float] = None,
              callback=None) -> BilevelResult:
        """Run until ``max_iter`` or until the work (every product, ``Counter.work``) reaches ``budget`` (or the
        lower-level evaluations reach ``ll_budget``)."""
        _check_problem(problem)
        max_iter = self.max_iter if max_iter is None else int(max_iter)
        budget = self.budget if budget is None else _positive(budget, "budget")
        ll_budget = self.ll_budget if ll_budget is None else _positive(ll_budget, "ll_budget")
        theta = problem.theta0.clone() if theta0 is None else theta0.detach().to(torch.float64).clone()
        x, q = problem.x0.clone(), None
        counter, hist = Counter(), new_history()
        g0, _ = problem.upper_value_grad(x)
        eps0, delta0 = self.accuracy(1)
        record(hist, counter, theta=theta, loss=g0, eps=eps0, delta=delta0, step=self.step)
        stop = "max_iter"
        for k in range(1, max_iter + 1):
            if counter.work >= budget or counter.ll >= ll_budget:
                stop = "budget"
                break
            eps, delta = self.accuracy(k)
            left = int(max(1, min(budget - counter.work, ll_budget - counter.ll)))
            self._left = left
            p, x, q, g = self.direction(problem, theta, x, q, eps, delta, counter, min(self.ll_max_iter, left))
            theta = theta - self.step * p
            record(hist, counter, theta=theta, loss=g, eps=eps, delta=delta, step=self.step,
                   grad_norm=float(torch.linalg.vector_norm(p)))
            if callback is not None:
                callback(k, theta, hist)
        return BilevelResult(theta=theta, x=x, history=hist, counter=counter, stop_reason=stop)

    def direction(self, problem, theta, x, q, eps, delta, counter, ll_cap):
        hg = inexact_hypergradient(problem, theta, x, eps, delta, counter, q_init=q, ll_max_iter=ll_cap,
                                   cg_max_iter=self.cg_max_iter, work_left=getattr(self, "_left", None))
        return hg.p, hg.x, hg.q, hg.g


class HOAG(_FixedStepHG):
    """HOAG with the summable accuracy sequence ``ε_k = δ_k = eps0 / k^power`` and a fixed step."""

    name = "hoag"

    def __init__(self, *, step: float, eps0: float = 1e-1, power: float = 1.1, **kw):
        super().__init__(step=step, **kw)
        self.eps0 = _positive(eps0, "eps0")
        self.power = float(power)
        if not self.power > 1.0:
            raise ValueError(f"power must be > 1 so that the accuracies are summable, got {power}")

    def accuracy(self, k: int) -> tuple:
        e = self.eps0 / k ** self.power
        return e, e


class HypergradientDescent(_FixedStepHG):
    """Hypergradient descent with fixed accuracy ``eps = delta`` and a fixed step (``exact=True``: closed form)."""

    name = "hypergradient-descent"

    def __init__(self, *, step: float, eps: float = 1e-6, delta: Optional[float] = None, exact: bool = False, **kw):
        super().__init__(step=step, **kw)
        self.eps = _positive(eps, "eps")
        self.delta = self.eps if delta is None else _positive(delta, "delta")
        self.exact = bool(exact)

    def accuracy(self, k: int) -> tuple:
        return self.eps, self.delta

    def direction(self, problem, theta, x, q, eps, delta, counter, ll_cap):
        if not self.exact:
            return super().direction(problem, theta, x, q, eps, delta, counter, ll_cap)
        if not hasattr(problem, "hypergradient"):
            raise ValueError(f"exact=True needs a problem with a closed-form hypergradient(theta) method; "
                             f"{type(problem).__name__} has none (use exact=False)")
        xs = problem.x_hat(theta)
        return problem.hypergradient(theta), xs, q, float(problem.upper(xs))


class GridSearch:
    """Grid search over a box of θ (``points`` per coordinate); lower level solved to ``eps`` at every point.

    Warm starts follow the grid order.  ``solve`` returns the best θ; the history lists every evaluated point.
    """

    name = "grid-search"

    def __init__(self, *, lower: Sequence[float], upper: Sequence[float], points: int = 10, eps: float = 1e-4,
                 max_dim: int = 3, ll_max_iter: int = 100000):
        lo = torch.as_tensor(lower, dtype=torch.float64).flatten()
        hi = torch.as_tensor(upper, dtype=torch.float64).flatten()
        if lo.shape != hi.shape:
            raise ValueError(f"lower and upper must have the same length, got {lo.numel()} and {hi.numel()}")
        if not bool((hi > lo).all()):
            raise ValueError("every upper bound must exceed its lower bound")
        if lo.numel() > max_dim:
            raise ValueError(f"grid search over {lo.numel()} hyperparameters needs points**{lo.numel()} solves; "
                             f"max_dim={max_dim} (raise max_dim to force it)")
        if int(points) < 2:
            raise ValueError(f"points must be >= 2, got {points}")
        self.lo, self.hi, self.points = lo, hi, int(points)
        self.eps = _positive(eps, "eps")
        self.ll_max_iter = int(ll_max_iter)

    def solve(self, problem: BilevelProblem, theta0: Optional[torch.Tensor] = None, **_) -> BilevelResult:
        _check_problem(problem)
        if problem.theta0.numel() != self.lo.numel():
            raise ValueError(f"grid has {self.lo.numel()} coordinates but theta has {problem.theta0.numel()}")
        axes = [torch.linspace(float(a), float(b), self.points, dtype=torch.float64) for a, b in zip(self.lo, self.hi)]
        counter, hist = Counter(), new_history()
        x = problem.x0.clone()
        best = (float("inf"), None, None)
        for pt in itertools.product(*axes):
            theta = torch.stack(list(pt)).reshape(problem.theta0.shape)
            x, n = fista(lambda z: problem.grad_lower_x(z, theta), x, problem.mu(theta), problem.L(theta), self.eps,
                         max_iter=self.ll_max_iter)
            counter.ll += n
            g = float(problem.upper(x))
            record(hist, counter, theta=theta, loss=g, eps=self.eps, delta=0.0, step=0.0)
            if g < best[0]:
                best = (g, theta, x)
        return BilevelResult(theta=best[1], x=best[2], history=hist, counter=counter, stop_reason="grid_done")
