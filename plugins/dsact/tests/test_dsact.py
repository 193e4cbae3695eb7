"""DSAC-T: the paper's equations, the update schedule, checkpoints and input errors."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import gradkit_core as gk
from gradkit_dsact.agent import (
    DSACT,
    Agent,
    SAC,
    TD3,
    DSACv1,
    TanhGaussianPolicy,
    dsac_v1_critic_loss,
    dsact_critic_loss,
    tanh_gaussian_log_prob,
    update_sigma_bar,
)

torch.set_num_threads(1)
TINY = dict(hidden=(16, 16), activation="relu", batch_size=16, warmup=40, env_steps_per_update=1,
            lr_critic=1e-3, lr_actor=1e-3, lr_alpha=1e-3, buffer_size=5000)


def _loss_inputs(seed=0, n=64, scale=5.0):
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(n, generator=g) * scale).requires_grad_()
    std = (torch.rand(n, generator=g) * 2 + 0.05).requires_grad_()
    y_mean = q.detach() + torch.randn(n, generator=g) * scale
    y_sample = y_mean + torch.randn(n, generator=g) * scale  # large TDs: the +-3 sigma_bar clip is active
    return q, std, y_mean, y_sample


def test_paper_critic_loss_gradients_are_the_papers_expressions():
    q, std, y_mean, y_sample = _loss_inputs()
    sigma_bar, eps_b, k = 0.7, 0.1, 3.0
    dq, dstd = torch.autograd.grad(dsact_critic_loss(q, std, y_mean, y_sample, sigma_bar, eps_b, k), [q, std])
    Q, S, n = q.detach(), std.detach(), q.numel()
    omega = sigma_bar ** 2 + eps_b
    y_b = Q + (y_sample - Q).clamp(-k * sigma_bar, k * sigma_bar)
    assert (y_sample - Q).abs().max() > k * sigma_bar  # the clip is exercised
    # dL/dQ: the TD error to the *expected* target, over sigma^2, scaled by omega = sigma_bar^2 + eps_b
    torch.testing.assert_close(dq, -omega * (y_mean - Q) / (S ** 2 + eps_b) / n)
    # dL/dsigma: the Gaussian-NLL gradient with the clipped sampled target
    torch.testing.assert_close(dstd, -omega * ((Q - y_b) ** 2 - S ** 2) / (S ** 3 + eps_b) / n)


def test_paper_std_gradient_is_gaussian_nll_gradient_when_eps_b_is_zero():
    q, std, y_mean, y_sample = _loss_inputs(seed=1, scale=0.3)  # small TDs: no clipping
    sigma_bar = 5.0
    _, dstd = torch.autograd.grad(dsact_critic_loss(q, std, y_mean, y_sample, sigma_bar, eps_b=0.0), [q, std])
    s = std.detach().clone().requires_grad_()
    nll = -torch.distributions.Normal(q.detach(), s).log_prob(y_sample).mean()
    (dnll,) = torch.autograd.grad(nll, [s])
    torch.testing.assert_close(dstd, sigma_bar ** 2 * dnll)


def test_v2025_critic_loss_gradients():
    q, std, y_mean, y_sample = _loss_inputs(seed=2, scale=40.0)  # some |TD| > 50: the Huber branch is exercised
    sigma_bar, eps_b = 3.0, 0.1
    dq, dstd = torch.autograd.grad(
        dsact_critic_loss(q, std, y_mean, y_sample, sigma_bar, eps_b, 3.0, form="v2025"), [q, std])
    Q, S, n = q.detach(), std.detach(), q.numel()
    ratio = (sigma_bar ** 2 / (S ** 2 + eps_b)).clamp(0.1, 10.0)
    td = Q - y_mean
    assert (td.abs() > 50).any()
    huber_grad = td.clamp(-50.0, 50.0)
    y_b = Q + (y_sample - Q).clamp(-3 * sigma_bar, 3 * sigma_bar)
    torch.testing.assert_close(dq, ratio * huber_grad / n)
    torch.testing.assert_close(
        dstd, ratio * (S ** 2 - F.huber_loss(Q, y_b, delta=50.0, reduction="none")) / (S + eps_b) / n)


def test_dsac_v1_loss_uses_sampled_target_and_fixed_bound():
    q, std, _, y_sample = _loss_inputs(seed=3)
    b, eps_b = 1.0, 0.1
    dq, dstd = torch.autograd.grad(dsac_v1_critic_loss(q, std, y_sample, b, eps_b), [q, std])
    Q, S, n = q.detach(), std.detach(), q.numel()
    y_b = Q + (y_sample - Q).clamp(-b, b)
    torch.testing.assert_close(dq, -(y_sample - Q) / (S ** 2 + eps_b) / n)
    torch.testing.assert_close(dstd, -((Q - y_b) ** 2 - S ** 2) / (S ** 3 + eps_b) / n)


def test_tanh_gaussian_log_prob_matches_torch_transformed_distribution():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(50, 3, generator=g)
    log_std = torch.rand(50, 3, generator=g) * 2 - 1.5
    u = mean + log_std.exp() * torch.randn(50, 3, generator=g)
    ref = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean.double(), log_std.double().exp()),
        [torch.distributions.transforms.TanhTransform()])
    expected = ref.log_prob(torch.tanh(u.double())).sum(-1)
    torch.testing.assert_close(tanh_gaussian_log_prob(u.double(), mean.double(), log_std.double()), expected)
    # the policy's reparameterised sample returns the same log-prob for the action it returns
    pol = TanhGaussianPolicy(4, 3, (8,), "relu").double()
    obs = torch.randn(20, 4, generator=g, dtype=torch.float64)
    a, logp = pol.sample(obs, torch.Generator().manual_seed(1))
    m, ls = pol(obs)
    dist = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(m, ls.exp()), [torch.distributions.transforms.TanhTransform()])
    torch.testing.assert_close(logp, dist.log_prob(a).sum(-1), rtol=1e-6, atol=1e-6)
    assert a.abs().max() < 1


def test_policy_log_std_is_clamped():
    pol = TanhGaussianPolicy(2, 1, (4,), "relu", -20.0, 0.5)
    with torch.no_grad():
        pol.net[-1].bias.fill_(100.0)
    _, log_std = pol(torch.zeros(3, 2))
    assert torch.all(log_std == 0.5)


def _filled_agent(cls=DSACT, **hp):
    agent = cls("Pendulum-v1", seed=0, **{**TINY, **hp})
    agent.learn(60)
    return agent


def test_sigma_bar_follows_its_running_average():
    agent = _filled_agent(tau_b=0.1)
    agent.sigma_bar = [None, None]
    expected = [None, None]
    for step in range(4):
        batch = agent.buffer.sample(16, torch.Generator().manual_seed(step))
        with torch.no_grad():
            means = [float(c(batch[0], batch[1])[1].mean()) for c in agent.critics]
        expected = [m if e is None else 0.9 * e + 0.1 * m for e, m in zip(expected, means)]
        agent._update(batch)
        agent.n_updates += 1
        assert agent.sigma_bar == pytest.approx(expected, rel=1e-6)
    assert update_sigma_bar(None, torch.tensor([1.0, 3.0]), 0.005) == 2.0
    assert update_sigma_bar(2.0, torch.tensor([4.0]), 0.25) == pytest.approx(2.5)


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def test_targets_policy_and_alpha_update_only_on_delayed_iterations():
    agent = _filled_agent(delay_update=2, tau=0.05)
    agent.n_updates = 0
    tau = 0.05
    for it in range(1, 5):
        before = dict(ct=_params(agent.critics_target), pt=_params(agent.policy_target),
                      pol=_params(agent.policy), c=_params(agent.critics), la=agent.log_alpha.item())
        agent._update(agent.buffer.sample(16, agent.gen))
        agent.n_updates += 1
        crit_changed = any(not torch.equal(a, b) for a, b in zip(before["c"], _params(agent.critics)))
        assert crit_changed, "critics are updated every iteration"
        if it % 2 == 1:
            assert all(torch.equal(a, b) for a, b in zip(before["ct"], _params(agent.critics_target)))
            assert all(torch.equal(a, b) for a, b in zip(before["pt"], _params(agent.policy_target)))
            assert all(torch.equal(a, b) for a, b in zip(before["pol"], _params(agent.policy)))
            assert agent.log_alpha.item() == before["la"]
        else:
            # Polyak: theta' <- (1 - tau) theta' + tau theta, for both target critics and the target policy
            for old, new, online in zip(before["ct"], _params(agent.critics_target), _params(agent.critics)):
                torch.testing.assert_close(new, (1 - tau) * old + tau * online)
            for old, new, online in zip(before["pt"], _params(agent.policy_target), _params(agent.policy)):
                torch.testing.assert_close(new, (1 - tau) * old + tau * online)
            assert any(not torch.equal(a, b) for a, b in zip(before["pol"], _params(agent.policy)))
            assert agent.log_alpha.item() != before["la"]


def test_targets_use_target_policy_smaller_mean_critic_and_expected_value():
    agent = _filled_agent(gamma=0.9)
    with torch.no_grad():  # make the online policy differ from the target policy
        for p in agent.policy.parameters():
            p.add_(0.5)
    obs, act, rew, obs2, done = agent.buffer.sample(32, torch.Generator().manual_seed(0))
    done[:5] = 1.0
    state = agent.gen.get_state()
    y_mean, y_sample = agent._targets(rew, obs2, done)
    g = torch.Generator()
    g.set_state(state)
    alpha = agent.alpha
    with torch.no_grad():
        a2, logp2 = agent.policy_target.sample(obs2, g)
        (m1, s1), (m2, s2) = [c(obs2, a2) for c in agent.critics_target]
        z1 = m1 + torch.randn(m1.shape, generator=g).clamp(-3, 3) * s1
        z2 = m2 + torch.randn(m2.shape, generator=g).clamp(-3, 3) * s2
    j1 = m1 < m2
    m = torch.where(j1, m1, m2)
    z = torch.where(j1, z1, z2)
    torch.testing.assert_close(y_mean, rew + 0.9 * (1 - done) * (m - alpha * logp2))
    torch.testing.assert_close(y_sample, rew + 0.9 * (1 - done) * (z - alpha * logp2))
    assert torch.equal(y_mean[:5], rew[:5])


def test_initial_temperature_and_target_entropy():
    agent = DSACT("Pendulum-v1", seed=0, **TINY)
    assert agent.alpha == pytest.approx(math.e)  # log alpha starts at 1
    assert agent.target_entropy == -1.0
    assert SAC("Pendulum-v1", seed=0, **{**TINY, "hidden": (8,)}).alpha == pytest.approx(1.0)


@pytest.mark.parametrize("cls", [DSACT, DSACv1, SAC, TD3])
def test_save_load_mid_episode_continues_identically(cls, tmp_path):
    kw = {**TINY, "env_steps_per_update": 2}
    if cls is TD3:  # no temperature
        kw.pop("lr_alpha")
    a = cls("Pendulum-v1", seed=5, **kw).learn(90)  # 90 steps: mid-episode, after warm-up
    assert a._obs is not None and a.n_updates > 0
    a.save(tmp_path / "a.pt")
    torch.load(tmp_path / "a.pt", weights_only=True)  # plain tensors / containers only
    b = cls.load(tmp_path / "a.pt")  # env re-made from the stored id, episode replayed
    a.learn(70)
    b.learn(70)
    c = cls("Pendulum-v1", seed=5, **kw).learn(160)  # uninterrupted
    for x in (b, c):
        for (name, ma), mb in zip(a._modules().items(), x._modules().values()):
            for pa, pb in zip(ma.parameters(), mb.parameters()):
                assert torch.equal(pa, pb), f"{name} diverged after reload"
        if cls is not TD3:
            assert x.log_alpha.item() == a.log_alpha.item()
        assert np.array_equal(x.buffer.obs[: x.buffer.size], a.buffer.obs[: a.buffer.size])
        assert x.n_updates == a.n_updates and x.num_timesteps == a.num_timesteps
    if cls in (DSACT, DSACv1):
        assert b.sigma_bar == a.sigma_bar


def test_load_rejects_other_algorithms(tmp_path):
    SAC("Pendulum-v1", seed=0, **TINY).save(tmp_path / "sac.pt")
    with pytest.raises(TypeError, match="sac"):
        DSACT.load(tmp_path / "sac.pt")
    assert type(Agent.load(tmp_path / "sac.pt", env=gym.make("Pendulum-v1"))) is SAC  # base class dispatches
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt"):
        DSACT.load(tmp_path / "junk.pt")


@pytest.mark.parametrize("name", ["dsac-t", "dsac-v1", "sac", "td3"])
def test_discrete_action_space_is_refused(name):
    with pytest.raises(TypeError, match="Box action space.*Discrete"):
        gk.create(name, gym.make("CartPole-v1"), seed=0, kind="agents")


class _NaNAfter(gym.Wrapper):
    def __init__(self, env, n):
        super().__init__(env)
        self.n, self.t = n, 0

    def step(self, action):
        obs, r, term, trunc, info = self.env.step(action)
        self.t += 1
        if self.t >= self.n:
            obs = obs.copy()
            obs[0] = np.nan
        return obs, r, term, trunc, info


def test_non_finite_observation_is_a_clear_error():
    agent = DSACT(_NaNAfter(gym.make("Pendulum-v1"), 7), seed=0, **TINY)
    with pytest.raises(ValueError, match="non-finite observation from env.step"):
        agent.learn(20)
    with pytest.raises(ValueError, match="non-finite observation passed to predict"):
        agent.predict(np.array([np.inf, 0.0, 0.0], np.float32))
    with pytest.raises(ValueError, match="shape"):
        agent.predict(np.zeros(5, np.float32))


def test_bad_hyperparameters_and_env_ids():
    with pytest.raises(TypeError, match="unknown hyperparameter"):
        DSACT("Pendulum-v1", lr=1e-3)
    with pytest.raises(ValueError, match="critic_loss"):
        DSACT("Pendulum-v1", critic_loss="huber")
    with pytest.raises(ValueError, match="unknown or unusable gymnasium env id"):
        DSACT("NoSuchEnv-v9")


def test_predict_maps_tanh_actions_to_box_bounds():
    agent = DSACT("Pendulum-v1", seed=0, **TINY)  # Pendulum torque in [-2, 2]
    np.testing.assert_allclose(agent._to_env_action(np.array([-1.0])), [-2.0])
    np.testing.assert_allclose(agent._to_env_action(np.array([0.5])), [1.0])
    batch, _ = agent.predict(np.zeros((4, 3), np.float32))
    assert batch.shape == (4, 1) and np.all(np.abs(batch) <= 2.0)


def test_registered_components():
    names = {s.name for s in gk.list(kind="agents")}
    assert {"dsac-t", "dsac-v1", "sac", "td3"} <= names
    assert gk.get("td3", kind="agents") is TD3
    assert gk.get("dsac-t", kind="agents") is DSACT
    assert isinstance(gk.create("dsac-v1", "Pendulum-v1", kind="agents", **TINY), DSACv1)


@pytest.mark.slow
def test_dsact_learns_pendulum_above_minus_250():
    from gradkit_dsact.reproduce import PENDULUM_HP

    agent = DSACT("Pendulum-v1", seed=0, **PENDULUM_HP).learn(5000)
    mean, _ = agent.evaluate(5)
    assert mean > -250, mean


def test_multidimensional_mujoco_action_space(tmp_path):
    pytest.importorskip("mujoco")
    agent = DSACT("HalfCheetah-v5", seed=0, **{**TINY, "warmup": 20}).learn(30)
    obs = np.stack([agent.env.observation_space.sample() * 0.1 for _ in range(4)]).astype(np.float32)
    acts, _ = agent.predict(obs, deterministic=True)
    assert acts.shape == (4, 6) and np.all(np.abs(acts) <= 1.0)
    mean, std = agent.q_distribution(obs, acts)
    assert mean.shape == (2, 4) and np.all(std > 0)
    agent.save(tmp_path / "hc.pt")
    np.testing.assert_array_equal(DSACT.load(tmp_path / "hc.pt").predict(obs, deterministic=True)[0], acts)


def test_pendulum_runs_in_worker_processes_equal_serial_runs(tmp_path):
    from gradkit_dsact.reproduce import run

    serial = run(quick=True, steps=40, progress=False)
    parallel = run(quick=True, steps=40, progress=False, jobs=2, out=tmp_path)
    key = lambda res: [(r["method"], r["final_return"], r["updates"]) for r in res.rows]  # noqa: E731
    assert key(parallel) == key(serial)
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4  # DSAC-T, DSAC-v1, SAC, TD3


def test_full_runs_are_stored_and_resumed(tmp_path):
    pytest.importorskip("mujoco")
    from gradkit_dsact.reproduce import run

    first = run(full=True, steps=60, seeds=[0], out=tmp_path, progress=False)
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4
    assert [r["method"] for r in first.rows] == ["DSAC-T", "DSAC-v1", "SAC", "TD3"]
    assert any("TD3" in c.text for c in first.claims)
    again = run(full=True, steps=60, seeds=[0], out=tmp_path, progress=False, resume=True)
    assert again.rows == first.rows  # wall_s included: read back, not rerun
