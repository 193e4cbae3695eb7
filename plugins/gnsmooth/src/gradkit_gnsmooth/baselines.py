"""Baselines of the paper's experiments, with the same ``solve(problem, x0) -> SolveResult`` API.

* :class:`AdaptiveGradient` — gradient method with adaptive ``L`` (halve on success,
  double on failure of ``f(T) ≤ f(x) + ⟨g, T-x⟩ + L/2‖T-x‖²``), Nesterov (2013).
* :class:`AdaptiveFastGradient` — Nesterov's fast gradient method with the same search.
* :class:`SuperUniversalNewton` — gradient-regularized Newton with
  ``λ = H_k ‖g‖^α`` and search ``⟨g(T), x - T⟩ ≥ ‖g(T)‖²/(4λ)`` (Doikov et al., 2024).
"""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Optional

import torch

from .gns import SolveResult, as_problem, newton_step
from .hessians import DTYPE


class _Base:
    def __init__(self, *, max_iters: int = 1000, f_star: Optional[float] = None, tol: float = 1e-8,
                 max_search: int = 30, time_limit: Optional[float] = None):
        if not (isinstance(max_iters, int) and max_iters >= 0):
            raise ValueError(f"max_iters must be a non-negative integer, got {max_iters!r}")
        self.max_iters, self.f_star, self.tol, self.max_search = max_iters, f_star, float(tol), max_search
        self.time_limit = time_limit

    def _start(self, problem, x0):
        problem = as_problem(problem)
        x = torch.as_tensor(x0, dtype=DTYPE).detach().clone()
        if x.dim() != 1:
            raise ValueError(f"x0 must be a vector, got shape {tuple(x.shape)}")
        return problem, x

    def _done(self, f: float, k: int, t0: float):
        if self.f_star is not None and f - self.f_star < self.tol:
            return f"success, {k} iters"
        if k == self.max_iters:
            return "iterations_exceeded"
        if self.time_limit is not None and time.perf_counter() - t0 > self.time_limit:
            return "time_limit"
        return None


class AdaptiveGradient(_Base):
    def __init__(self, *, L0: float = 1.0, L_min: float = 1e-5, **kw):
        super().__init__(**kw)
        self.L0, self.L_min = float(L0), float(L_min)

    def solve(self, problem: Any, x0: Any) -> SolveResult:
        problem, x = self._start(problem, x0)
        f, g, L = float(problem.func(x)), problem.grad(x), self.L0
        hist: Dict[str, List[float]] = {"func": [], "grad_norm": [], "L": [], "time": [], "grad_calls": []}
        calls, t0, status = 1, time.perf_counter(), ""
        for k in range(self.max_iters + 1):
            hist["func"].append(f)
            hist["grad_norm"].append(float(torch.linalg.norm(g)))
            hist["L"].append(L)
            hist["time"].append(time.perf_counter() - t0)
            hist["grad_calls"].append(calls)
            status = self._done(f, k, t0)
            if status:
                break
            for _ in range(self.max_search):
                T = x - g / L
                fT = float(problem.func(T))
                if fT <= f + float(g @ (T - x)) + 0.5 * L * float((T - x) @ (T - x)):
                    L = max(0.5 * L, self.L_min)
                    break
                L *= 2
            x, f, g = T, fT, problem.grad(T)
            calls += 1
        return SolveResult(x, f, status, hist)


class AdaptiveFastGradient(_Base):
    def __init__(self, *, L0: float = 1.0, L_min: float = 1e-5, **kw):
        super().__init__(**kw)
        self.L0, self.L_min = float(L0), float(L_min)

    def solve(self, problem: Any, x0: Any) -> SolveResult:
        problem, x = self._start(problem, x0)
        v, A, L = x.clone(), 0.0, self.L0
        f = float(problem.func(x))
        hist: Dict[str, List[float]] = {"func": [], "L": [], "time": [], "grad_calls": []}
        calls, t0, status = 0, time.perf_counter(), ""
        for k in range(self.max_iters + 1):
            hist["func"].append(f)
            hist["L"].append(L)
            hist["time"].append(time.perf_counter() - t0)
            hist["grad_calls"].append(calls)
            status = self._done(f, k, t0)
            if status:
                break
            for _ in range(self.max_search):
                a = (1 + math.sqrt(1 + 4 * A * L)) / (2 * L)
                y = (a * v + A * x) / (a + A)
                gy = problem.grad(y)
                calls += 1
                T = y - gy / L
                fT, fy = float(problem.func(T)), float(problem.func(y))
                if fT <= fy + float(gy @ (T - y)) + 0.5 * L * float((T - y) @ (T - y)):
                    L = max(0.5 * L, self.L_min)
                    break
                L *= 2
            v = T + A / a * (T - x)
            A += a
            x, f = T, fT
        return SolveResult(x, f, status, hist)


class SuperUniversalNewton(_Base):
    def __init__(self, *, H0: float = 1.0, alpha: float = 1.0, H_min: float = 1e-5, **kw):
        kw.setdefault("max_search", 40)
        super().__init__(**kw)
        self.H0, self.alpha, self.H_min = float(H0), float(alpha), float(H_min)

    def solve(self, problem: Any, x0: Any) -> SolveResult:
        problem, x = self._start(problem, x0)
        f, g, Hk = float(problem.func(x)), problem.grad(x), self.H0
        hist: Dict[str, List[float]] = {"func": [], "grad_norm": [], "H": [], "time": [], "grad_calls": []}
        calls, t0, status = 1, time.perf_counter(), ""
        for k in range(self.max_iters + 1):
            gn = float(torch.linalg.norm(g))
            hist["func"].append(f)
            hist["grad_norm"].append(gn)
            hist["H"].append(Hk)
            hist["time"].append(time.perf_counter() - t0)
            hist["grad_calls"].append(calls)
            status = self._done(f, k, t0)
            if status:
                break
            Hess = torch.as_tensor(problem.hess(x), dtype=DTYPE)
            for _ in range(self.max_search):
                lam = Hk * gn ** self.alpha
                d = newton_step(Hess, g, lam)
                fT, gT = float(problem.func(x + d)), problem.grad(x + d)
                calls += 1
                if float(gT @ (-d)) >= float(gT @ gT) / (4 * lam):
                    Hk = max(0.25 * Hk, self.H_min)
                    break
                Hk *= 4
            x, f, g = x + d, fT, gT
        return SolveResult(x, f, status, hist)
