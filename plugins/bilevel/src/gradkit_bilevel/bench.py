"""Side-by-side cost to a target upper-level accuracy: MAID vs HOAG (best of its fixed steps), MAID with fixed ε
and (TV only) an 8×8 grid search, reported as ratios to MAID (> 1: the baseline needs more).

Work = lower-level gradient evaluations + CG Hessian-vector products + the products of MAID's constant
estimates; wall time is measured in the same process (one thread, loaded 2-core machine).  The target is
``f ≤ f* + tol (f(θ₀) − f*)`` with f* the closed form (quadratic) or the best value any method reached (TV).
"""

from __future__ import annotations

import math
import time
from typing import Optional

import torch

from gradkit_core.results import Result, progress as _progress

from .reproduce import reference_values


def _time_to(r, values, target):
    for v, w, t in zip(values, r.history["work"], r.times):
        if v <= target:
            return float(w), t
    return float("inf"), float("inf")


def _solve_timed(solver, problem, **kw):
    stamps = []
    t0 = time.perf_counter()
    r = solver.solve(problem, callback=lambda k, th, h: stamps.append(time.perf_counter() - t0), **kw)
    r.times = [0.0] + stamps
    # non-accepted MAID iterations are also recorded; align the lengths defensively
    if len(r.times) < len(r.history["work"]):
        r.times += [r.times[-1]] * (len(r.history["work"]) - len(r.times))
    return r


def _ratio(a, b):
    if not math.isfinite(a):
        return "baseline never reached the target"
    if not math.isfinite(b):
        return "MAID never reached the target"
    return round(a / b, 2)


def run(*, quick: bool = False, out: Optional[str] = None, seed: int = 0, progress: bool = True) -> Result:
    from .baselines import HOAG, GridSearch
    from .maid import MAID, MAIDFixedEps
    from .problems import QuadraticBilevel, TVDenoising

    torch.set_num_threads(1)
    res = Result("bilevel", title="Work and wall time to a target upper loss, baseline / MAID (ratio > 1: MAID cheaper)")
    Q = QuadraticBilevel.random(n=1000, m=10, seed=seed, centered=True)
    T = (TVDenoising.from_skimage(size=16, downsample=4, seed=seed) if quick
         else TVDenoising.from_skimage(size=32, downsample=2, seed=seed))
    q_it, t_it, t_budget = (150, 40, 2500) if quick else (400, 80, 4000)
    cases = [
        ("quadratic", Q, 1e-3, dict(max_iter=q_it),
         {"MAID": MAID(eps=1e-1, delta=1e-1, rho=0.5, tau=0.5, nu=1.25, beta=0.01),
          "MAID fixed eps=1e-5": MAIDFixedEps(eps=1e-5, rho=0.5, beta=0.01),
          **{f"HOAG step={s:g}/Lf": HOAG(step=s / Q.Lf, eps0=0.1) for s in (0.5, 1.0, 1.9)}}),
        ("tv-denoising", T, 1e-2, dict(max_iter=t_it, ll_budget=t_budget),
         {"MAID": MAID(),
          "MAID fixed eps=1e-3": MAIDFixedEps(eps=1e-3, beta=0.1),
          **{f"HOAG step={s:g}": HOAG(step=s, eps0=0.1) for s in (0.3, 1.0, 3.0)}}),
    ]
    for pname, P, tol, kw, methods in cases:
        runs = {}
        for name, solver in _progress(methods.items(), total=len(methods), desc=pname, enabled=progress):
            r = _solve_timed(solver, P, **kw)
            r.values = reference_values(P, r.history["theta"])
            runs[name] = r
        if pname == "tv-denoising":
            g = GridSearch(lower=[-4.0, -7.0], upper=[0.0, -1.0], points=8, eps=1e-3)
            t0 = time.perf_counter()
            gr = g.solve(P)
            gr.wall = time.perf_counter() - t0
            gr.values = reference_values(P, gr.history["theta"])
        f0 = runs["MAID"].values[0]
        f_star = getattr(P, "f_star", None)
        if f_star is None:
            f_star = min(min(r.values) for r in runs.values())
            f_star = min(f_star, min(gr.values))
        target = f_star + tol * (f0 - f_star)
        w_m, t_m = _time_to(runs["MAID"], runs["MAID"].values, target)
        res.add_row(problem=pname, method="MAID", work=w_m if math.isfinite(w_m) else "never",
                    wall_s=round(t_m, 3) if math.isfinite(t_m) else "never", work_ratio=1.0, time_ratio=1.0)
        for name, r in runs.items():
            if name == "MAID":
                continue
            w, t = _time_to(r, r.values, target)
            res.add_row(problem=pname, method=name, work=w if math.isfinite(w) else "never",
                        wall_s=round(t, 3) if math.isfinite(t) else "never", work_ratio=_ratio(w, w_m),
                        time_ratio=_ratio(t, t_m))
        if pname == "tv-denoising":
            w = float(gr.counter.work) if min(gr.values) <= target else float("inf")
            t = gr.wall if math.isfinite(w) else float("inf")
            res.add_row(problem=pname, method="grid search 8x8", work=w if math.isfinite(w) else "never",
                        wall_s=round(t, 3) if math.isfinite(t) else "never", work_ratio=_ratio(w, w_m),
                        time_ratio=_ratio(t, t_m))
        res.meta[f"{pname}_target"] = f"f* + {tol:g} (f0 - f*)"
    res.add_note("Ratios are baseline / MAID measured in one process; wall times on a loaded 2-core machine.")
    return res
