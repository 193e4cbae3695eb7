"""Trajectory optimisation and inverse design on tiny seeded problems."""

import numpy as np
import pytest
import torch

from gradkit_thinshell.sim import PARAM_NAMES
from gradkit_thinshell.tasks import separate_task, sliding_initial_state, sliding_task
from gradkit_thinshell.trajopt import cmaes_trajopt, fit_parameter, grad_trajopt, segments_to_actions


def test_segments_are_piecewise_constant_and_bounded():
    task = separate_task(n=3, horizon=6)
    theta = np.array([0.5, -2.0, 0.1, 1.0, 0.0, -0.3])  # 2 segments x 1 pad x 3
    a = segments_to_actions(theta, task, 2)
    m = task.sim.max_moving_dist
    assert a.shape == (6, 1, 3)
    assert torch.allclose(a[0], a[2]) and torch.allclose(a[3], a[5])
    assert float(a[0, 0, 1]) == pytest.approx(-m)  # clamped to the gripper limit
    assert float(a.abs().max()) <= m


def test_gradient_from_zero_trajectory_is_stuck():
    task = separate_task(n=3, horizon=4)
    zero = torch.zeros(4, 1, 3, dtype=torch.float64, requires_grad=True)
    R = task.rollout_reward(zero)
    R.backward()
    # the pad starts above the sheets: no contact, so the reward has exactly zero gradient (paper's GD failure)
    assert float(zero.grad.abs().max()) == 0.0
    g = grad_trajopt(task, None, lr=0.1, iters=2)
    assert g.rollouts == 4 and abs(g.reward - float(R.detach())) < 1e-9


@pytest.mark.slow
def test_cmaes_finds_contact_and_gradient_refines_it():
    task = separate_task(n=3, horizon=6)
    g = grad_trajopt(task, None, lr=0.1, iters=2)
    c = cmaes_trajopt(task, n_segments=2, popsize=4, sigma0=0.6, budget=12, seed=0)
    assert c.rollouts == 12 and len(c.history) == 12
    assert c.reward > max(g.reward, 0.0) + 1e-5
    g2 = grad_trajopt(task, c.actions, lr=0.1, iters=3)
    assert g2.reward >= c.reward


def test_inverse_design_recovers_friction_within_5_percent():
    task = sliding_task(n=3, horizon=6, tol=1e-9)
    s0 = sliding_initial_state(task)
    p = task.sim.params.clone()
    p[PARAM_NAMES.index("mu_table")] = 0.4
    with torch.no_grad():
        obs = [s.x for s in task.sim.rollout(torch.zeros(6, 0, 3, dtype=torch.float64), state=s0, params=p)]
    fit = fit_parameter(task, obs, "mu_table", 0.25, state=s0, max_evals=8)
    assert abs(fit["estimate"] - 0.4) / 0.4 < 0.05
    assert fit["history"][-1] < 1e-3 * fit["history"][0]


def test_inverse_design_on_centre_of_mass_data_from_a_finer_mesh():
    # the data come from a 5x5 sheet the fitted 3x3 model did not generate; only the centre of mass is observed
    T = 8
    data = sliding_task(n=5, horizon=T, tol=1e-9)
    p = data.sim.params.clone()
    p[PARAM_NAMES.index("mu_table")] = 0.4
    with torch.no_grad():
        obs = [s.x.mean(0) for s in data.sim.rollout(torch.zeros(T, 0, 3, dtype=torch.float64),
                                                      state=sliding_initial_state(data), params=p)]
    model = sliding_task(n=3, horizon=T, tol=1e-9)
    s0 = sliding_initial_state(model)
    with pytest.raises(ValueError, match="observe="):
        fit_parameter(model, obs, "mu_table", 0.25, state=s0, max_evals=2)
    fit = fit_parameter(model, obs, "mu_table", 0.25, state=s0, max_evals=10, observe=lambda x: x.mean(0))
    assert abs(fit["estimate"] - 0.4) / 0.4 < 0.02
    assert fit["history"][-1] < 1e-2 * fit["history"][0]
    with pytest.raises(ValueError, match="finite"):
        fit_parameter(model, obs, "mu_table", float("inf"), state=s0)
    bad = [o.clone() for o in obs]
    bad[3][0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        fit_parameter(model, bad, "mu_table", 0.25, state=s0, observe=lambda x: x.mean(0))


def test_pad_starting_in_contact_gives_gradient_descent_a_signal():
    # the counterpart of test_gradient_from_zero_trajectory_is_stuck: with the pad pressing the top sheet from the
    # start, the reward's gradient at the zero trajectory is non-zero and a few Adam steps improve the reward
    task = separate_task(n=3, horizon=4, press=1.5e-4)
    d0 = float(task.sim.pad_centers0[0, 2]) - task.sim.X0[task.info["top"], 2]
    zero = torch.zeros(4, 1, 3, dtype=torch.float64, requires_grad=True)
    R0 = task.rollout_reward(zero)
    R0.backward()
    assert float(zero.grad.abs().max()) > 1e-3
    assert float(zero.grad[0, 0, 0]) > 0  # dragging along +x pulls the top sheet off the bottom one
    g = grad_trajopt(task, None, lr=0.3, iters=3)
    assert g.reward > float(R0.detach()) + 1e-5
    with pytest.raises(ValueError, match="press"):
        separate_task(n=3, press=-1e-4)
    assert float(d0.min()) > 0
