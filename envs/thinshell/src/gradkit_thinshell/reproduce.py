"""Reproduction of ThinShellLab's optimisation claims at CPU scale.

Separate (and lift) task: best reward of CMA-ES alone, Adam ("gradient") alone from the zero trajectory,
and CMA-ES followed by gradient refinement (the paper's method), each with the same simulator budget
(rollouts; a gradient iteration = forward + adjoint = 2 rollouts).  Inverse design: recover the table
friction coefficient of a sliding sheet from its observed trajectory by gradient (L-BFGS-B through the
adjoint) and by CMA-ES with the same number of rollouts.
"""

from __future__ import annotations

import math
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


def _mean_se(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, float("inf")
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def _contact_case(res: Result, task, budget, popsize, n_segments, lrs, seeds, show, label):
    """The pad starts in contact, so gradient descent is not stuck by construction.  Each gradient method is run
    with every Adam step size in ``lrs`` and compared at its best one; the CMA-ES methods over ``seeds``."""
    zero = torch.zeros(task.horizon, len(task.sim.scene.pads), 3, dtype=torch.float64, requires_grad=True)
    R0 = task.rollout_reward(zero)
    R0.backward()
    grad0, R0 = float(zero.grad.abs().max()), float(R0.detach())
    n_runs = len(lrs) * budget + len(seeds) * (2 * budget)
    half = budget // 2
    with pbar(total=n_runs, desc=f"{label}: trajopt", enabled=show) as bar:
        g_by_lr = {lr: grad_trajopt(task, None, lr=lr, iters=budget // 2, progress=bar) for lr in lrs}
        c_full, cg_by_lr = [], {lr: [] for lr in lrs}
        for sd in seeds:
            c_full.append(cmaes_trajopt(task, n_segments=n_segments, popsize=popsize, sigma0=0.5, budget=budget,
                                        seed=sd, progress=bar))
            c = cmaes_trajopt(task, n_segments=n_segments, popsize=popsize, sigma0=0.5, budget=half,
                              seed=sd)
            for lr in lrs:
                g = grad_trajopt(task, c.actions, lr=lr, iters=(budget - c.rollouts) // 2)
                cg_by_lr[lr].append(max(c.reward, g.reward))
            bar.update(budget)
    g_best_lr = max(lrs, key=lambda lr: g_by_lr[lr].reward)
    cg_best_lr = max(lrs, key=lambda lr: _mean_se(cg_by_lr[lr])[0])
    rg = g_by_lr[g_best_lr].reward
    cg = cg_by_lr[cg_best_lr]
    cm = [c.reward for c in c_full]
    for lr in lrs:
        res.add_row(task=label, method="gradient", lr=lr, reward=g_by_lr[lr].reward, rollouts=g_by_lr[lr].rollouts,
                    seeds=1)
        m, se = _mean_se(cg_by_lr[lr])
        res.add_row(task=label, method="cma-es+gradient", lr=lr, reward=m, reward_se=se, rollouts=budget,
                    seeds=len(seeds))
    m_c, se_c = _mean_se(cm)
    res.add_row(task=label, method="cma-es", reward=m_c, reward_se=se_c, rollouts=budget, seeds=len(seeds))
    res.add_curve(f"{label}: best reward vs rollouts", f"gradient (lr {g_best_lr})",
                  list(range(1, len(g_by_lr[g_best_lr].history) + 1)), g_by_lr[g_best_lr].history)
    for name, lr in (("gradient", g_best_lr), ("cma-es+gradient", cg_best_lr)):
        if lr in (lrs[0], lrs[-1]):
            res.add_note(f"{label}: the best Adam step size of {name} ({lr}) is at the edge of the grid {list(lrs)}")
    res.add_claim(f"{label}: gradient alone is not stuck (non-zero gradient at the zero trajectory) and improves on it",
                  grad0 > 0 and rg > R0, f"|dR/da| at zero = {grad0:.3g}; reward {R0:.5f} -> {rg:.5f} (lr {g_best_lr})")
    m, se = _mean_se(cg)
    res.add_claim(f"{label}: CMA-ES -> gradient beats gradient alone (mean over {len(seeds)} seeds - gradient > 2 se)",
                  m - rg > 2 * se, f"cma-es+grad {m:.5f} +- {se:.5f} (lr {cg_best_lr}) vs gradient {rg:.5f} "
                  f"(lr {g_best_lr}, deterministic) at {budget} rollouts")
    d = [a - b for a, b in zip(cg, cm)]
    md, sed = _mean_se(d)
    res.add_claim(f"{label}: CMA-ES -> gradient beats CMA-ES alone (paired over {len(seeds)} seeds, mean > 2 se)",
                  md > 2 * sed, f"difference {md:.5f} +- {sed:.5f}; cma-es {m_c:.5f} +- {se_c:.5f}")


def _inverse_heldout(res: Result, T, evals, show):
    """Inverse design on data the fitted model did not generate: the sliding sheet's centre-of-mass trajectory from
    a finer 6x6 mesh, and from the same 3x3 mesh simulated with a 4x smaller time step (every 4th frame kept);
    the fitted model is the 3x3 sheet at dt = 5 ms."""
    from .sim import PARAM_NAMES

    mu_true, mu_init = 0.4, 0.15
    model = sliding_task(n=3, horizon=T, tol=1e-9)
    s0 = sliding_initial_state(model)
    out = {}
    for label, n, div in (("6x6 mesh, same dt", 6, 1), ("3x3 mesh, dt/4", 3, 4)):
        data = sliding_task(n=n, horizon=T * div, tol=1e-9, dt=model.sim.dt / div)
        p = data.sim.params.clone()
        p[PARAM_NAMES.index("mu_table")] = mu_true
        with torch.no_grad():
            st = data.sim.rollout(torch.zeros(T * div, 0, 3, dtype=torch.float64), state=sliding_initial_state(data),
                                  params=p)
        obs = [s.x.mean(0) for s in st[::div]]
        t = time.perf_counter()
        fit = fit_parameter(model, obs, "mu_table", mu_init, state=s0, max_evals=evals, observe=lambda x: x.mean(0))
        err = abs(fit["estimate"] - mu_true) / mu_true
        res.add_row(task=f"inverse design mu_table, data: {label}", method="gradient (L-BFGS-B + adjoint)",
                    estimate=fit["estimate"], true=mu_true, rel_error=err, rollouts=2 * fit["rollouts"],
                    final_loss=fit["history"][-1], seconds=round(time.perf_counter() - t, 1))
        res.add_claim(f"inverse design on data from a {label} (model 3x3, dt 5 ms) recovers mu within 5%",
                      err <= 0.05, f"mu {fit['estimate']:.4f} vs true {mu_true} ({100 * err:.2f}%), relative final "
                      f"loss {fit['history'][-1] / fit['history'][0]:.2g}")
        out[label] = fit
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
        cfg = dict(n=4, sep_T=8, sep_budget=24, pop=4, lift=False, lift_T=8, lift_budget=8, inv_T=10, inv_evals=8,
                   con_T=8, con_budget=16, con_seeds=2)
    elif full:
        cfg = dict(n=6, sep_T=30, sep_budget=160, pop=16, lift=True, lift_T=20, lift_budget=64, inv_T=20, inv_evals=20,
                   con_T=20, con_budget=64, con_seeds=5)
    else:
        cfg = dict(n=4, sep_T=15, sep_budget=48, pop=8, lift=True, lift_T=10, lift_budget=16, inv_T=15, inv_evals=15,
                   con_T=10, con_budget=32, con_seeds=3)
    res.meta.update(cfg, seed=seed, quick=quick, full=full)

    sep = separate_task(n=cfg["n"], horizon=cfg["sep_T"], tol=1e-6)
    _compare(res, sep, cfg["sep_budget"], cfg["pop"], 3, 0.1, seed, progress, "separate")
    # the pad starts pressing the top sheet: gradient descent is not stuck by construction
    sepc = separate_task(n=cfg["n"], horizon=cfg["con_T"], tol=1e-6, press=1.5e-4)
    _contact_case(res, sepc, cfg["con_budget"], 4, 3, (0.1, 0.3, 1.0, 3.0),
                  [seed + k for k in range(cfg["con_seeds"])], progress, "separate, pad starts in contact")
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
                 "cores; one seed and one Adam step size for the separate / lift comparisons (as before), "
                 f"{cfg['con_seeds']} seeds and a step-size grid for the contact-start case")
    _inverse_heldout(res, cfg["inv_T"], cfg["inv_evals"], progress)
    res.add_note("held-out inverse design: the fitted model (3x3 sheet, dt 5 ms) is fitted to the centre-of-mass "
                 "trajectory of a simulation it did not generate; the error left is the model's discretisation error")
    return res
