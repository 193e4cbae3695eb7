"""Benchmark: forward step and forward+backward CPU time versus mesh size, Newton iterations per step, and how the
cost grows with the number of unknowns.

Scene: one ``n x n``-vertex sheet (6 cm) on the table, a spherical pad pressing into its centre and dragging
it along x, so contact and friction are active in every step.  For each size: CPU time (``time.process_time``,
so other jobs on a shared machine inflate it less than wall time) of a forward step and of a forward+adjoint step
(a rollout of ``T`` steps with a loss on the final positions, backward through every step), the median of
``repeats`` repetitions, Newton iterations and Hessian factorisations per step, and the growth exponent ``k`` in
``cost ~ DOF^k`` between consecutive sizes and from 11x11 to 21x21.
"""

from __future__ import annotations

import math
import os
import statistics
import time

import torch

from gradkit_core.results import Result, progress as pbar

from .mesh import DTYPE, make_sheet
from .sim import START_CLEARANCE, Pad, Scene, ThinShellSim


def _scene(n: int, size: float = 0.06):
    eps = 4e-4 + START_CLEARANCE
    r = 0.01
    sheet = make_sheet(n, size, origin=(0.0, 0.0, eps))
    pad = Pad("sphere", (size / 2, size / 2, 2 * eps + r - 2e-4), r)
    return Scene([sheet], pads=[pad])


def _actions(T):
    a = torch.zeros(T, 1, 3, dtype=DTYPE)
    a[:, 0, 0] = 1e-3
    a[: T // 2, 0, 2] = -2e-4
    return a


def run(*, quick: bool = False, out=None, seed: int = 0, progress: bool = True, threads: int = 1) -> Result:
    """``threads``: torch intra-op threads during the benchmark (1 by default: these small sparse problems run
    fastest single-threaded on a shared machine; the previous setting is restored afterwards).  ``out`` is unused
    (the core saves the result)."""
    torch.manual_seed(seed)
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick, progress)
    finally:
        torch.set_num_threads(prev)


def measure(n: int, T: int = 8, repeats: int = 3) -> dict:
    """CPU ms per step (median over ``repeats``) of a forward rollout and of forward+backward on the bench scene."""
    sim = ThinShellSim(_scene(n))
    a = _actions(T)
    warm = a[:1].clone().requires_grad_(True)  # warm-up of the forward and of the adjoint (first-call costs)
    sim.rollout(warm)[-1].x.sum().backward()
    fwd, fb, its, hess = [], [], [], []
    for _ in range(repeats):
        sim.stats_log.clear()
        t = time.process_time()
        with torch.no_grad():
            sim.rollout(a)
        fwd.append((time.process_time() - t) / T)
        its.append(sum(s.iterations for s in sim.stats_log) / T)
        hess.append(sum(s.hessians for s in sim.stats_log) / T)
        act = a.clone().requires_grad_(True)
        t = time.process_time()
        states = sim.rollout(act)
        states[-1].x[:, 0].sum().backward()
        fb.append((time.process_time() - t) / T)
    return dict(dof=sim.n_dof, forward_ms=1e3 * statistics.median(fwd), fwd_bwd_ms=1e3 * statistics.median(fb),
                fwd_bwd_spread_ms=1e3 * (max(fb) - min(fb)), newton_iters=its[0], hessians=hess[0])


def _run(quick, progress) -> Result:
    sizes = [6, 11] if quick else [6, 11, 16, 21]
    T = 4 if quick else 8
    repeats = 3
    load0 = os.getloadavg()
    res = Result("thinshell-bench", title="thin-shell simulator: CPU time per step vs mesh size (sheet + sphere pad, "
                                          "contact + friction)")
    prev = None
    for n in pbar(sizes, desc="mesh sizes", enabled=progress):
        m = measure(n, T, repeats)
        growth = (math.log(m["fwd_bwd_ms"] / prev["fwd_bwd_ms"]) / math.log(m["dof"] / prev["dof"])
                  if prev else float("nan"))
        res.add_row(vertices=f"{n}x{n}", dof=m["dof"], forward_ms=m["forward_ms"], fwd_bwd_ms=m["fwd_bwd_ms"],
                    fwd_bwd_spread_ms=m["fwd_bwd_spread_ms"], newton_iters=m["newton_iters"], hessians=m["hessians"],
                    growth_exponent=growth)
        prev = m
    rows = {r["vertices"]: r for r in res.rows}
    dofs = [r["dof"] for r in res.rows]
    res.add_curve("CPU ms per step vs DOF", "forward", dofs, [r["forward_ms"] for r in res.rows])
    res.add_curve("CPU ms per step vs DOF", "forward+backward", dofs, [r["fwd_bwd_ms"] for r in res.rows])
    res.add_curve("Newton iterations per step", "iterations", dofs, [r["newton_iters"] for r in res.rows])
    if "11x11" in rows:
        ms = rows["11x11"]["fwd_bwd_ms"]
        res.add_claim("forward+backward at 11x11 costs <= 50 ms of CPU time per step", ms <= 50.0,
                      f"{ms:.1f} ms per step (median of {repeats})")
    if "11x11" in rows and "21x21" in rows:
        a, b = rows["11x11"], rows["21x21"]
        k = math.log(b["fwd_bwd_ms"] / a["fwd_bwd_ms"]) / math.log(b["dof"] / a["dof"])
        res.meta["growth_exponent_11_to_21"] = k
        res.add_note(f"11x11 -> 21x21: forward+backward x{b['fwd_bwd_ms'] / a['fwd_bwd_ms']:.2f} for x"
                     f"{b['dof'] / a['dof']:.2f} the unknowns: cost ~ DOF^{k:.2f}")
    load1 = os.getloadavg()
    res.add_note(f"CPU time (time.process_time), median of {repeats} repetitions of {T} steps; 1-minute load average "
                 f"{load0[0]:.1f} before, {load1[0]:.1f} after")
    res.add_note("sparse assembly into a fixed CSR pattern and sparse LU reused across Newton iterations; the adjoint "
                 "costs one more sparse factorisation + solve and one vector-Jacobian product per step")
    res.meta.update(sizes=sizes, steps=T, repeats=repeats, torch_threads=torch.get_num_threads(),
                    load_average_before=load0, load_average_after=load1)
    return res
