"""Gymnasium envs: the kind's conformance suite, the differentiable rollout path and failure handling."""

import numpy as np
import pytest
import torch

import gradkit_thinshell.envs  # noqa: F401  (registers the gymnasium ids)
from gradkit_core.testing.envs import EnvConformance
from gradkit_thinshell import env_name

SMALL = dict(n=3, horizon=3)


class TestSeparateConformance(EnvConformance):
    env_id = "gradkit/ThinShellSeparate-v0"
    component = env_name(env_id)
    component_kwargs = SMALL
    max_episode_steps = 3
    n_steps = 3


class TestLiftConformance(EnvConformance):
    env_id = "gradkit/ThinShellLift-v0"
    component = env_name(env_id)
    component_kwargs = dict(n=3, horizon=2, block_res=(2, 2, 2))
    max_episode_steps = 2
    n_steps = 2


class TestFoldConformance(EnvConformance):
    env_id = "gradkit/ThinShellFold-v0"
    component = env_name(env_id)
    component_kwargs = SMALL
    max_episode_steps = 3
    n_steps = 3


def test_episode_return_equals_task_reward_and_rollout_is_differentiable():
    import gymnasium

    env = gymnasium.make("gradkit/ThinShellSeparate-v0", n=3, horizon=5, tol=1e-11).unwrapped
    env.reset(seed=0)
    acts = np.array([[0, 0, -0.9], [0, 0, -0.9], [0, 0, -0.9], [0.8, 0, 0], [0.8, 0, 0]], dtype=np.float32)
    ret = 0.0
    for a in acts:
        _, r, term, trunc, info = env.step(a)
        ret += r
    assert trunc and not term
    A = torch.tensor(acts, dtype=torch.float64, requires_grad=True)
    R = env.rollout(A)
    assert float(R.detach()) == pytest.approx(ret, abs=1e-9)
    assert float(R.detach()) == pytest.approx(info["task_reward"], abs=1e-12)
    assert ret > 0  # pressing then dragging moves the top sheet more than the bottom one
    R.backward()
    h = 1e-4
    for key in ((3, 0), (2, 2)):
        Ap, Am = A.detach().clone(), A.detach().clone()
        Ap[key] += h
        Am[key] -= h
        with torch.no_grad():
            fd = (env.rollout(Ap) - env.rollout(Am)) / (2 * h)
        assert abs(float(fd)) > 0
        assert float(A.grad[key]) == pytest.approx(float(fd), rel=1e-3)


def test_env_rejects_actions_beyond_gripper_limits():
    import gymnasium

    env = gymnasium.make("gradkit/ThinShellFold-v0", **SMALL).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="gripper limits"):
        env.step(np.array([1.5, 0.0, 0.0], dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(6, dtype=np.float32))


def test_newton_failure_terminates_episode_with_penalty():
    import gymnasium

    env = gymnasium.make("gradkit/ThinShellFold-v0", n=3, horizon=3, newton_max_iter=1, tol=1e-14).unwrapped
    env.reset(seed=0)
    obs, r, term, trunc, info = env.step(np.array([0.0, 0.0, 1.0], dtype=np.float32))
    assert term and r == -1.0 and info["newton_failed"] and np.all(np.isfinite(obs))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_action_raises_and_leaves_the_episode_unchanged(bad):
    import gymnasium

    env = gymnasium.make("gradkit/ThinShellSeparate-v0", **SMALL).unwrapped
    ref = gymnasium.make("gradkit/ThinShellSeparate-v0", **SMALL).unwrapped
    obs0, _ = env.reset(seed=0)
    ref.reset(seed=0)
    a = np.array([0.3, 0.0, -0.5], dtype=np.float32)
    env.step(a)
    ref.step(a)
    before = env._obs().copy()
    with pytest.raises(ValueError, match="finite"):
        env.step(np.array([0.1, bad, 0.0], dtype=np.float32))
    assert np.array_equal(env._obs(), before) and env._t == 1
    # the episode continues exactly as if the bad call had not happened
    o1, r1, *_ = env.step(a)
    o2, r2, *_ = ref.step(a)
    assert np.array_equal(o1, o2) and r1 == r2
    # the differentiable path rejects it too
    A = torch.zeros(3, 3, dtype=torch.float64)
    A[1, 2] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        env.rollout(A)
