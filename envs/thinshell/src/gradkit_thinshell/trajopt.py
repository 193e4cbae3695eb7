"""Trajectory optimisation as in ThinShellLab: CMA-ES over piecewise-constant gripper velocities, Adam on the
full per-step trajectory through the differentiable simulator, and CMA-ES followed by gradient refinement.

Actions are per-step gripper translations bounded by ``max_moving_dist`` per axis.  CMA-ES searches
``n_segments x action_dim`` numbers in [-1, 1] (each segment's velocity, held for ``horizon / n_segments``
steps, times ``max_moving_dist``).  The gradient method optimises unconstrained ``z`` with
``action = max_moving_dist * tanh(z)`` so every iterate is a valid action.  Budgets are counted in
simulator rollouts: a CMA-ES candidate costs one rollout, a gradient iteration one forward and one
adjoint rollout (counted as 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional

import numpy as np
import torch

from .mesh import DTYPE
from .sim import NewtonError
from .tasks import Task

GRAD_COST = 2  # rollouts charged per gradient iteration (forward + adjoint)


@dataclass
class TrajOptResult:
    method: str
    actions: torch.Tensor  # (T, n_pads, 3) best actions found
    reward: float
    history: List[float] = field(default_factory=list)  # best reward after each unit of budget
    rollouts: int = 0
    failures: int = 0


def segments_to_actions(theta, task: Task, n_segments: int) -> torch.Tensor:
    """Piecewise-constant per-step actions (T, n_pads, 3) from segment values in [-1, 1]."""
    T, G = task.horizon, len(task.sim.scene.pads)
    seg = torch.as_tensor(np.asarray(theta, dtype=np.float64)).reshape(n_segments, G, 3).clamp(-1, 1)
    which = torch.div(torch.arange(T) * n_segments, T, rounding_mode="floor")
    return seg[which] * task.sim.max_moving_dist


def _evaluate(task: Task, actions: torch.Tensor) -> Optional[float]:
    try:
        with torch.no_grad():
            return float(task.rollout_reward(actions))
    except NewtonError:
        return None


def cmaes_trajopt(task: Task, n_segments: int = 5, popsize: int = 16, sigma0: float = 0.5, budget: int = 200,
                  seed: int = 0, x0=None, progress=None) -> TrajOptResult:
    """CMA-ES (pycma) over piecewise-constant velocities; ``budget`` = max rollouts.  A rollout whose Newton
    solve fails scores as a failure (reward - 1, as the paper's objective penalises failed episodes)."""
    import cma

    G = len(task.sim.scene.pads)
    dim = n_segments * G * 3
    x0 = np.zeros(dim) if x0 is None else np.asarray(x0, dtype=np.float64)
    if x0.shape != (dim,) or not np.isfinite(x0).all():
        raise ValueError(f"x0 must be {dim} finite numbers (segments x pads x 3), got shape {x0.shape}")
    if not (isinstance(sigma0, (int, float)) and 0 < sigma0 < math.inf):
        raise ValueError(f"sigma0 must be a positive finite number, got {sigma0!r}")
    # flat fitness (no candidate touches anything yet) must not stop the search before the budget is spent
    es = cma.CMAEvolutionStrategy(x0, sigma0, {"popsize": popsize, "bounds": [-1.0, 1.0], "seed": seed + 1,
                                               "verbose": -9, "maxfevals": budget, "tolflatfitness": 10**6,
                                               "tolfun": 0.0, "tolfunhist": 0.0, "tolstagnation": 10**6,
                                               "tolx": 0.0})
    best, best_x, hist, used, fails = -math.inf, x0, [], 0, 0
    while not es.stop() and used + popsize <= budget:
        X = es.ask()
        fit = []
        for xi in X:
            r = _evaluate(task, segments_to_actions(xi, task, n_segments))
            used += 1
            if r is None:
                fails += 1
                r = -1.0
            if r > best:
                best, best_x = r, np.array(xi)
            fit.append(-r)
            hist.append(best)
            if progress is not None:
                progress.update(1)
        es.tell(X, fit)
    return TrajOptResult("cma-es", segments_to_actions(best_x, task, n_segments), best, hist, used, fails)


def grad_trajopt(task: Task, init_actions: Optional[torch.Tensor] = None, lr: float = 0.1, iters: int = 20,
                 max_grad_norm: float = 1.0, progress=None) -> TrajOptResult:
    """Adam on the full per-step trajectory (``z`` with ``a = max_dist * tanh(z)``), gradients by the
    simulator's implicit adjoint.  ``max_grad_norm`` clips each gradient (ThinShellLab's ``clamp_grad``)."""
    sim = task.sim
    G, T, m = len(sim.scene.pads), task.horizon, sim.max_moving_dist
    if init_actions is None:
        init_actions = torch.zeros(T, G, 3, dtype=DTYPE)
    task.sim.check_action(torch.zeros(G, 3, dtype=DTYPE))
    init_actions = torch.as_tensor(init_actions, dtype=DTYPE)
    if init_actions.numel() != T * G * 3 or not torch.isfinite(init_actions).all():
        raise ValueError(f"init_actions must be {T * G * 3} finite numbers (horizon x pads x 3), got shape "
                         f"{tuple(init_actions.shape)}" + ("" if torch.isfinite(init_actions).all() else " with NaN/inf"))
    for name, val in (("lr", lr), ("max_grad_norm", max_grad_norm)):
        if not (isinstance(val, (int, float)) and 0 < val < math.inf):
            raise ValueError(f"{name} must be a positive finite number, got {val!r}")
    ratio = (init_actions.detach().reshape(T, G, 3) / m).clamp(-0.995, 0.995)
    z = torch.atanh(ratio).clone().requires_grad_(True)
    opt = torch.optim.Adam([z], lr=lr)
    best, best_a, hist, fails = -math.inf, init_actions.detach().reshape(T, G, 3).clone(), [], 0
    for _ in range(iters):
        opt.zero_grad()
        actions = m * torch.tanh(z)
        try:
            R = task.rollout_reward(actions)
            (-R).backward()
        except NewtonError:
            fails += 1
            hist += [best] * GRAD_COST
            with torch.no_grad():
                z.mul_(0.5)  # fallback: shrink the trajectory toward rest and retry
            continue
        r = float(R.detach())
        if r > best:
            best, best_a = r, actions.detach().clone()
        hist += [best] * GRAD_COST
        if z.grad is not None and torch.isfinite(z.grad).all():
            torch.nn.utils.clip_grad_norm_([z], max_grad_norm)
            opt.step()
        if progress is not None:
            progress.update(GRAD_COST)
    return TrajOptResult("gradient", best_a, best, hist, GRAD_COST * iters, fails)


def cmaes_then_grad(task: Task, budget: int = 200, cma_fraction: float = 0.5, n_segments: int = 5,
                    popsize: int = 16, sigma0: float = 0.5, lr: float = 0.1, seed: int = 0,
                    progress=None) -> TrajOptResult:
    """The paper's method: CMA-ES for ``cma_fraction`` of the budget, then Adam from CMA-ES's best trajectory."""
    cma_budget = int(budget * cma_fraction)
    c = cmaes_trajopt(task, n_segments, popsize, sigma0, cma_budget, seed, progress=progress)
    iters = max(0, (budget - c.rollouts) // GRAD_COST)
    g = grad_trajopt(task, c.actions, lr=lr, iters=iters, progress=progress)
    hist = c.history + [max(c.reward, h) for h in g.history]
    best = max(c.reward, g.reward)
    acts = g.actions if g.reward >= c.reward else c.actions
    return TrajOptResult("cma-es+gradient", acts, best, hist, c.rollouts + g.rollouts, c.failures + g.failures)


def _fit_setup(task: Task, observed: List[torch.Tensor], name: str, init: float, actions):
    """The checks and defaults both parameter fits share: ``(sim, parameter index, actions)``."""
    from .sim import PARAM_NAMES

    sim = task.sim
    if name not in PARAM_NAMES:
        raise ValueError(f"unknown parameter {name!r}; expected one of {PARAM_NAMES}")
    if not (isinstance(init, (int, float)) and 0 < init < math.inf):
        raise ValueError(f"initial guess for {name} must be a positive finite number, got {init!r}")
    if not all(torch.isfinite(o.detach()).all() for o in observed):
        raise ValueError("observed trajectory contains NaN or inf")
    if actions is None:
        actions = torch.zeros(len(observed) - 1, len(sim.scene.pads), 3, dtype=DTYPE)
    return sim, PARAM_NAMES.index(name), actions


def fit_parameter(task: Task, observed: List[torch.Tensor], name: str, init: float, state=None, actions=None,
                  max_evals: int = 20, lo: float = 1e-4, hi: float = 1e4,
                  observe: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> dict:
    """Inverse design: fit one simulator parameter to an observed position trajectory by gradient.

    Minimises the mean squared error between ``observe(x_t)`` of the model's states and ``observed[t]`` over the
    trajectory (normalised by the observation's spread) over ``log(param)`` with L-BFGS-B (scipy), each evaluation
    one rollout plus the implicit adjoint for the gradient.  ``observe`` (default: all vertex positions) lets the
    data come from another mesh or simulator, e.g. ``lambda x: x.mean(0)`` for the centre of mass.  Returns the
    estimate, the loss history and the number of rollouts used.
    """
    from scipy.optimize import minimize

    sim, i, actions = _fit_setup(task, observed, name, init, actions)
    obs_fn = (lambda x: x) if observe is None else observe
    obs = torch.stack([o.detach() for o in observed])
    scale = float((obs - obs[0]).abs().max()) + 1e-12
    hist, est = [], []
    norm = []  # the first loss value: the objective is scaled to start at 1 so L-BFGS-B's first step is O(1)

    def f(z):
        logv = torch.tensor(float(z[0]), dtype=DTYPE, requires_grad=True)
        p = torch.cat([sim.params[:i], logv.exp().reshape(1), sim.params[i + 1:]])
        X = torch.stack([obs_fn(s.x) for s in sim.rollout(actions, state=state, params=p)])
        if X.shape != obs.shape:
            raise ValueError(f"observed frames have shape {tuple(obs.shape[1:])} but the model's observations have "
                             f"{tuple(X.shape[1:])}; pass observe= to map the model's positions to the data")
        loss = ((X - obs) ** 2).mean() / scale**2
        loss.backward()
        if not norm:
            norm.append(max(float(loss.detach()), 1e-300))
        hist.append(float(loss.detach()))
        est.append(float(logv.detach().exp()))
        return float(loss.detach()) / norm[0], np.array([float(logv.grad) / norm[0]])

    res = minimize(f, np.array([math.log(init)]), jac=True, method="L-BFGS-B",
                   bounds=[(math.log(lo), math.log(hi))], options=dict(maxfun=max_evals, ftol=1e-16, gtol=1e-14))
    return dict(estimate=float(math.exp(res.x[0])), history=hist, estimates=est, rollouts=len(hist))


def fit_parameter_cmaes(task: Task, observed: List[torch.Tensor], name: str, init: float, state=None,
                        actions=None, budget: int = 20, popsize: int = 4, sigma0: float = 0.5, seed: int = 0) -> dict:
    """The gradient-free baseline of :func:`fit_parameter`: CMA-ES on ``log(param)`` with ``budget`` rollouts."""
    import cma

    sim, i, actions = _fit_setup(task, observed, name, init, actions)
    obs = torch.stack([o.detach() for o in observed])
    scale = float((obs - obs[0]).abs().max()) + 1e-12
    hist, est = [], []
    es = cma.CMAEvolutionStrategy([math.log(init)], sigma0, {"popsize": popsize, "seed": seed + 1, "verbose": -9})
    best, best_v = math.inf, init
    while len(hist) + popsize <= budget:
        Z = es.ask()
        fit = []
        for z in Z:
            p = sim.params.clone()
            p[i] = math.exp(float(z[0]))
            with torch.no_grad():
                X = torch.stack([s.x for s in sim.rollout(actions, state=state, params=p)])
            loss = float(((X - obs) ** 2).mean() / scale**2)
            fit.append(loss)
            if loss < best:
                best, best_v = loss, math.exp(float(z[0]))
            hist.append(best)
            est.append(best_v)
        es.tell(Z, fit)
    return dict(estimate=best_v, history=hist, estimates=est, rollouts=len(hist))
