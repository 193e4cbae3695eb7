"""Time to ``f - f* < 1e-8``: GNS (approximate / exact Hessian) vs scipy.optimize Newton-CG and L-BFGS-B.

Same float64 objective (closed-form f, gradient, Hessian in torch; scipy gets
them as NumPy callables, Newton-CG the exact Hessian), one process, one thread.
Times are medians over ``repeats`` runs; ratios are GNS time / scipy time
(< 1 means GNS is faster).  scipy is stopped by its own tolerances; the time at
which it first reached the target is read from its per-iteration callback.
"""

from __future__ import annotations

import statistics
import time
from typing import Optional

import numpy as np
import torch

from gradkit_core.results import Result

TARGET = 1e-8


def _scipy_time(prob, x0, method: str, f_star: float):
    from scipy.optimize import minimize

    D = torch.float64
    f = lambda x: float(prob.func(torch.from_numpy(x)))  # noqa: E731
    g = lambda x: prob.grad(torch.from_numpy(x)).numpy()  # noqa: E731
    h = lambda x: prob.hess(torch.from_numpy(x)).numpy()  # noqa: E731
    stamps = []
    t0 = time.perf_counter()

    def cb(xk, *args):
        stamps.append((time.perf_counter() - t0, np.array(xk, copy=True)))

    kw = dict(jac=g, callback=cb)
    if method == "Newton-CG":
        kw.update(hess=h, options=dict(xtol=1e-14, maxiter=500))
    else:
        kw.update(options=dict(ftol=1e-16, gtol=1e-12, maxiter=20000, maxcor=10))
    out = minimize(f, x0.numpy(), method=method, **kw)
    total = time.perf_counter() - t0
    for i, (t, xk) in enumerate(stamps):
        if f(xk) - f_star < TARGET:
            return t, i + 1, total
    return None, len(stamps), total if out is not None else None


def _gns_time(prob, x0, hessian, f_star):
    from .gns import GradNormSmoothSolver

    r = GradNormSmoothSolver(hessian=hessian, f_star=f_star, tol=TARGET, max_iters=500, time_limit=120).solve(prob, x0)
    for k, fv in enumerate(r.history["func"]):
        if fv - f_star < TARGET:
            return r.history["time"][k], k, r.history["time"][-1]
    return None, r.iterations, r.history["time"][-1]


def run(*, quick: bool = False, out: Optional[str] = None, seed: int = 0, progress: bool = True) -> Result:
    from .gns import GradNormSmoothSolver
    from .problems import LogisticRegression, SoftmaxRegression

    torch.set_num_threads(1)
    repeats = 1 if quick else 3
    D = torch.float64
    soft = SoftmaxRegression.digits(lam=1e-4)
    if quick:
        soft = SoftmaxRegression(soft.X[:400], soft.y[:400], 10, 1e-4)
    problems = [("logistic (breast cancer)", LogisticRegression.breast_cancer(1e-4)), ("softmax (digits)", soft)]
    res = Result("gnsmooth", title="Time to f - f* < 1e-8: GNS vs scipy.optimize (ratios < 1: GNS faster)")
    for pname, prob in problems:
        x0 = torch.zeros(prob.n, dtype=D)
        f_star = GradNormSmoothSolver(hessian="exact", grad_tol=1e-12, max_iters=300).solve(prob, x0).f
        times = {}
        for label, fn in [
            ("GNS-approx (weighted GN)", lambda: _gns_time(prob, x0, prob.approx_hess, f_star)),
            ("GNS-exact", lambda: _gns_time(prob, x0, "exact", f_star)),
            ("scipy Newton-CG (exact Hessian)", lambda: _scipy_time(prob, x0, "Newton-CG", f_star)),
            ("scipy L-BFGS-B", lambda: _scipy_time(prob, x0, "L-BFGS-B", f_star)),
        ]:
            runs = [fn() for _ in range(repeats)]
            reached = [r[0] for r in runs if r[0] is not None]
            t = statistics.median(reached) if len(reached) == len(runs) else None
            times[label] = t
            res.add_row(problem=pname, method=label, seconds_to_1e8=round(t, 4) if t is not None else "not reached",
                        iterations=runs[0][1])
        for g in ("GNS-approx (weighted GN)", "GNS-exact"):
            for s in ("scipy Newton-CG (exact Hessian)", "scipy L-BFGS-B"):
                if times[g] is not None and times[s] is not None:
                    res.add_row(problem=pname, method=f"ratio {g} / {s}", seconds_to_1e8=round(times[g] / times[s], 3))
        if times["GNS-exact"] is not None and times["scipy Newton-CG (exact Hessian)"] is not None:
            res.add_claim(f"[{pname}] GNS-exact is within 3x of scipy Newton-CG's time",
                          times["GNS-exact"] <= 3 * times["scipy Newton-CG (exact Hessian)"],
                          f"{times['GNS-exact']:.3f}s vs {times['scipy Newton-CG (exact Hessian)']:.3f}s")
    res.meta.update(repeats=repeats, threads=1, target=TARGET)
    res.add_note("scipy's iterations are its own (Newton-CG inner CG steps and L-BFGS line searches not counted)")
    return res
