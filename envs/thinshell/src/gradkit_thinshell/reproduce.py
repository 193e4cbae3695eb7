"""Reproduction of ThinShellLab's optimisation claims at CPU scale.

Separate (and lift) task: best reward of CMA-ES alone, Adam ("gradient") alone from the zero trajectory,
and CMA-ES followed by gradient refinement (the paper's method), each with the same simulator budget
(rollouts; a gradient iteration = forward + adjoint = 2 rollouts).  Inverse design: recover the table
friction coefficient of a sliding sheet from its observed trajectory by gradient (L-BFGS-B through the
adjoint) and by CMA-ES with the same number of rollouts.
"""

from __future__ import annotations

import time

import torch

from gradkit_core.results import Result, progress as pbar

from .tasks import lift_task, separate_task, sliding_initial_state, sliding_task
from .trajopt import cmaes_then_grad, cmaes_trajopt, fit_parameter, fit_parameter_cmaes, grad_trajopt

PAPER_TITLE = "ThinShellLab (ICLR 2024, arXiv 2404.00451)"


def _compare(res: Result, task, budget, popsize, n_segments, lr, seed, show, label):
    out = {}
    with pbar(total=3 * budget, desc=f"{label}: trajopt", enabled=show) as bar:
        t = time.perf_counter()
        c = cmaes_trajopt(task, n_segments=n_segments, popsize=popsize, sigma0=0.5, budget=budget, seed=seed,
                          progress=bar)
        out["cma-es"] = (c, time.perf_counter() - t)
        t = time.perf_counter()
        zero = torch.zeros(task.horizon, len(task.sim.scene.pads), 3, dtype=torch.float64, requires_grad=True)
        R0 = task.rollout_reward(zero)
        R0.backward()
        grad0 = float(zero.grad.abs().max())
        g = grad_trajopt(task, None, lr=lr, iters=budget // 2, progress=bar)
        out["gradient"] = (g, time.perf_counter() - t)
        t = time.perf_counter()
        cg = cmaes_then_grad(task, budget=budget, cma_fraction=0.5, n_segments=n_segments, popsize=popsize,
                             sigma0=0.5, lr=lr, seed=seed, progress=bar)
        out["cma-es+gradient"] = (cg, time.perf_counter() - t)
    for name, (r, sec) in out.items():
        res.add_row(task=label, method=name, reward=r.reward, rollouts=r.rollouts, newton_failures=r.failures,
                    seconds=round(sec, 1))
        res.add_curve(f"{label}: best reward vs rollouts", name, list(range(1, len(r.history) + 1)), r.history)
    rc, rg, rcg = (out[k][0].reward for k in ("cma-es", "gradient", "cma-es+gradient"))
    res.add_claim(f"{label}: CMA-ES -> gradient reaches the highest reward at an equal budget", rcg >= max(rc, rg),
                  f"cma-es+grad {rcg:.5f} vs cma-es {rc:.5f} vs gradient {rg:.5f} ({budget} rollouts)")
    if grad0 == 0.0:
        res.add_claim(f"{label}: gradient alone from the zero trajectory is stuck (no initial contact -> zero gradient)",
                      rg <= rc, f"|dR/da| at zero = 0; gradient-alone reward {rg:.5f} vs cma-es {rc:.5f}")
    else:
        res.add_claim(f"{label}: gradient alone from the zero trajectory ends in a worse local optimum than CMA-ES",
                      rg < rc, f"|dR/da| at zero = {grad0:.3g} (contact from the start); gradient {rg:.5f} vs "
                      f"cma-es {rc:.5f}")
    if rcg == rc:
        res.add_note(f"{label}: the gradient phase did not improve on CMA-ES's best trajectory (tie)")
    return out


def run(*, quick: bool = False, full: bool = False, out=None, seed: int = 0, progress: bool = True,
        threads: int = 1) -> Result:
    """``threads``: torch intra-op threads while running (1 by default: the small dense solves are fastest
    single-threaded, ~10x faster than 2 threads on a busy 2-core machine); restored afterwards."""
    prev = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(quick, full, out, seed, progress)
    finally:
        torch.set_num_threads(prev)


def _run(quick, full, out, seed, progress) -> Result:
    torch.manual_seed(seed)
    res = Result("thinshell", title=f"{PAPER_TITLE}: trajectory optimisation and inverse design (CPU scale)")
    if quick:
        cfg = dict(n=4, sep_T=8, sep_budget=24, pop=4, lift=False, lift_T=8, lift_budget=8, inv_T=10, inv_evals=8)
    elif full:
        cfg = dict(n=6, sep_T=30, sep_budget=160, pop=16, lift=True, lift_T=20, lift_budget=64, inv_T=20, inv_evals=20)
    else:
        cfg = dict(n=4, sep_T=15, sep_budget=48, pop=8, lift=True, lift_T=10, lift_budget=16, inv_T=15, inv_evals=15)
    res.meta.update(cfg, seed=seed, quick=quick, full=full)

    sep = separate_task(n=cfg["n"], horizon=cfg["sep_T"], tol=1e-6)
    _compare(res, sep, cfg["sep_budget"], cfg["pop"], 3, 0.1, seed, progress, "separate")
    if cfg["lift"]:
        lift = lift_task(n=cfg["n"], horizon=cfg["lift_T"], tol=1e-6)
        # a smaller Adam step on lift (the block is in contact from the start; 0.1 overshoots), same for both
        # gradient methods
        _compare(res, lift, cfg["lift_budget"], 4, 2, 0.03, seed, progress, "lift")

    # inverse design: friction coefficient of a sheet sliding on the table
    task = sliding_task(n=3, horizon=cfg["inv_T"], tol=1e-9)
    s0 = sliding_initial_state(task)
    mu_true, mu_init = 0.4, 0.15
    p = task.sim.params.clone()
    from .sim import PARAM_NAMES

    p[PARAM_NAMES.index("mu_table")] = mu_true
    with torch.no_grad():
        obs = [s.x for s in task.sim.rollout(torch.zeros(cfg["inv_T"], 0, 3, dtype=torch.float64), state=s0, params=p)]
    t = time.perf_counter()
    gfit = fit_parameter(task, obs, "mu_table", mu_init, state=s0, max_evals=cfg["inv_evals"])
    tg = time.perf_counter() - t
    t = time.perf_counter()
    cfit = fit_parameter_cmaes(task, obs, "mu_table", mu_init, state=s0, budget=2 * cfg["inv_evals"], seed=seed)
    tc = time.perf_counter() - t
    for name, fit, sec, cost in (("gradient (L-BFGS-B + adjoint)", gfit, tg, 2 * gfit["rollouts"]),
                                 ("cma-es", cfit, tc, cfit["rollouts"])):
        err = abs(fit["estimate"] - mu_true) / mu_true
        res.add_row(task="inverse design mu_table", method=name, estimate=fit["estimate"], true=mu_true,
                    rel_error=err, rollouts=cost, seconds=round(sec, 1))
    res.add_curve("inverse design: mu estimate", "gradient", [2 * (i + 1) for i in range(len(gfit["estimates"]))],
                  gfit["estimates"])
    res.add_curve("inverse design: mu estimate", "cma-es", list(range(1, len(cfit["estimates"]) + 1)),
                  cfit["estimates"])
    gerr = abs(gfit["estimate"] - mu_true) / mu_true
    cerr = abs(cfit["estimate"] - mu_true) / mu_true
    res.add_claim("inverse design recovers the friction coefficient within 5% by gradient", gerr <= 0.05,
                  f"mu {gfit['estimate']:.4f} vs true {mu_true} ({100 * gerr:.2f}%) in {gfit['rollouts']} evaluations")
    res.add_claim("gradient-based inverse design beats CMA-ES at an equal rollout budget", gerr <= cerr,
                  f"gradient error {100 * gerr:.3f}% vs CMA-ES {100 * cerr:.3f}%")
    res.add_note("budgets count rollouts; one gradient iteration (forward + implicit adjoint) is charged 2 rollouts")
    res.add_note(f"meshes are tiny ({cfg['n']}x{cfg['n']}-vertex sheets) so that the comparison runs in minutes on 2 CPU "
                 "cores; one seed")
    if out is not None:
        res.save(out)
    return res
