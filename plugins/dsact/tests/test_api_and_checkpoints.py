"""stable-baselines3-compatible API, TD3, checkpoint errors and checkpoint safety, a CI learning check."""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch

from gradkit_dsact.agent import DSACT, SAC, DSACv1

torch.set_num_threads(1)
TINY = dict(hidden=(16, 16), activation="relu", batch_size=16, warmup=40, env_steps_per_update=1,
            lr_critic=1e-3, lr_actor=1e-3, buffer_size=5000)


def _td3():
    from gradkit_dsact.agent import TD3

    return TD3


class _Reach2D(gym.Env):
    """A point that the action pushes toward the origin: a 2-D Box action space without MuJoCo."""

    observation_space = gym.spaces.Box(-5.0, 5.0, (2,), np.float32)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = self.np_random.uniform(-2, 2, 2).astype(np.float32), 0
        return self.x.copy(), {}

    def step(self, action):
        self.x = np.clip(self.x + 0.1 * np.asarray(action, np.float32), -5, 5).astype(np.float32)
        self.t += 1
        return self.x.copy(), -float(np.linalg.norm(self.x)), False, self.t >= 20, {}


# ----------------------------------------------------------------------------- SB3 API
def test_predict_returns_action_and_state_like_sb3_on_a_2d_action_space():
    agent = DSACT(_Reach2D(), seed=0, **TINY)
    obs, _ = _Reach2D().reset(seed=0)
    out = agent.predict(obs, deterministic=True)
    assert isinstance(out, tuple) and len(out) == 2, "predict must return (action, state)"
    action, state = out
    assert action.shape == (2,) and state is None
    # the state is passed through untouched (non-recurrent policy), as in stable-baselines3
    marker = (np.zeros(3),)
    assert agent.predict(obs, state=marker, episode_start=np.ones(1, bool), deterministic=True)[1] is marker
    batch, _ = agent.predict(np.stack([obs, obs, obs]), deterministic=True)
    assert batch.shape == (3, 2)
    np.testing.assert_array_equal(batch[0], action)


def test_predict_default_is_stochastic_and_does_not_touch_the_training_generator():
    agent = DSACT("Pendulum-v1", seed=0, **TINY)
    obs = np.zeros(3, np.float32)
    before = agent.gen.get_state().clone()
    draws = {float(agent.predict(obs)[0][0]) for _ in range(5)}  # SB3's default: deterministic=False
    assert len(draws) > 1
    assert torch.equal(agent.gen.get_state(), before), "predict must not consume the training random stream"


def test_learn_takes_sb3_arguments():
    agent = DSACT("Pendulum-v1", seed=0, **TINY)
    calls = []
    assert agent.learn(total_timesteps=30, callback=lambda a: calls.append(a.num_timesteps), progress_bar=False) is agent
    assert agent.num_timesteps == 30 and calls == list(range(1, 31))
    agent.learn(50, callback=lambda a: a.num_timesteps < 40)  # returning False stops
    assert agent.num_timesteps == 40
    with pytest.raises(TypeError, match="callback"):
        agent.learn(5, callback="not callable")


@pytest.mark.parametrize("algo", ["dsac-t", "sac", "td3"])
def test_sb3_evaluate_policy_runs_a_gradkit_agent(algo):
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv

    from gradkit_dsact.agent import _ALGOS

    agent = _ALGOS[algo]("Pendulum-v1", seed=0, **TINY).learn(60)
    venv = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    venv.seed(7)
    rewards, lengths = evaluate_policy(agent, venv, n_eval_episodes=1, deterministic=True,
                                       return_episode_rewards=True, warn=False)
    # the same episode by hand: SB3 got exactly our deterministic policy's return
    env = gym.make("Pendulum-v1")
    obs, _ = env.reset(seed=7)
    ret, done, n = 0.0, False, 0
    while not done:
        obs, r, term, trunc, _ = env.step(agent.predict(obs, deterministic=True)[0])
        ret, n, done = ret + float(r), n + 1, term or trunc
    assert lengths == [n] == [200]
    assert rewards[0] == pytest.approx(ret, rel=1e-5)
    mean, std = evaluate_policy(agent, gym.make("Pendulum-v1"), n_eval_episodes=2, warn=False)
    assert np.isfinite(mean) and std >= 0


# ----------------------------------------------------------------------------- TD3
def test_td3_target_uses_smoothed_target_actor_and_the_smaller_target_critic():
    TD3 = _td3()
    agent = TD3("Pendulum-v1", seed=0, **TINY)
    g = torch.Generator().manual_seed(3)
    obs2, rew, done = torch.randn(8, 3, generator=g), torch.randn(8, generator=g), (torch.rand(8, generator=g) < 0.3).float()
    state = agent.gen.get_state().clone()
    y = agent._target(rew, obs2, done)
    agent.gen.set_state(state)
    noise = (torch.randn(8, 1, generator=agent.gen) * agent.hp["target_noise"]).clamp(
        -agent.hp["target_noise_clip"], agent.hp["target_noise_clip"])
    with torch.no_grad():
        a2 = (agent.policy_target.deterministic(obs2) + noise).clamp(-1, 1)
        q = torch.minimum(agent.critics_target[0](obs2, a2), agent.critics_target[1](obs2, a2))
    torch.testing.assert_close(y, rew + 0.99 * (1 - done) * q)
    assert agent.hp["target_noise_clip"] < 3 * agent.hp["target_noise"]  # the clip is reachable


def test_td3_actor_and_targets_move_only_on_delayed_iterations():
    TD3 = _td3()
    agent = TD3("Pendulum-v1", seed=0, **{**TINY, "warmup": 40}).learn(39)  # buffer filled, no update yet
    assert agent.n_updates == 0
    snap = lambda m: [p.detach().clone() for p in m.parameters()]  # noqa: E731
    changed = lambda a, b: any(not torch.equal(x, y) for x, y in zip(a, b))  # noqa: E731
    pol, pol_t, crit, crit_t = snap(agent.policy), snap(agent.policy_target), snap(agent.critics), snap(agent.critics_target)
    agent._update(agent.buffer.sample(16, agent.gen)); agent.n_updates += 1  # iteration 1: critics only
    assert changed(crit, snap(agent.critics))
    assert not changed(pol, snap(agent.policy)) and not changed(pol_t, snap(agent.policy_target))
    assert not changed(crit_t, snap(agent.critics_target))
    pol, crit, crit_t = snap(agent.policy), snap(agent.critics), snap(agent.critics_target)
    agent._update(agent.buffer.sample(16, agent.gen)); agent.n_updates += 1  # iteration 2: actor + Polyak
    assert changed(pol, snap(agent.policy))
    for old_t, new, new_t in zip(crit_t, snap(agent.critics), snap(agent.critics_target)):
        torch.testing.assert_close(new_t, 0.995 * old_t + 0.005 * new)


def test_td3_exploration_noise_is_gaussian_and_clipped_to_the_box():
    TD3 = _td3()
    agent = TD3("Pendulum-v1", seed=0, **TINY)
    obs = torch.zeros(4000, 3)
    with torch.no_grad():
        a, logp = agent.policy.sample(obs, agent.gen)
        det = agent.policy.deterministic(obs)
    assert logp is None
    d = (a - det).numpy().ravel()
    assert np.all(np.abs(a.numpy()) <= 1.0)
    inside = np.abs(det.numpy().ravel() + d) < 0.99
    assert abs(d[inside].std() - agent.hp["action_noise"]) < 0.01


# ----------------------------------------------------------------------------- checkpoint errors
@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ck") / "agent.pt"
    DSACT("Pendulum-v1", seed=0, **TINY).learn(45).save(path)
    return path


def _mutated(ckpt, tmp_path, fn, name="bad.pt"):
    st = torch.load(ckpt, weights_only=True)
    fn(st)
    out = tmp_path / name
    torch.save(st, out)
    return out


def test_truncated_and_empty_files_name_the_file_and_the_problem(ckpt, tmp_path):
    data = ckpt.read_bytes()
    trunc = tmp_path / "truncated.pt"
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt.*(truncated|corrupt)"):
        DSACT.load(trunc)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt.*empty"):
        DSACT.load(empty)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        DSACT.load(tmp_path / "missing.pt")


def test_missing_key_and_unknown_algorithm_name_the_file(ckpt, tmp_path):
    bad = _mutated(ckpt, tmp_path, lambda st: st.pop("buffer"), "nobuffer.pt")
    with pytest.raises(ValueError, match=r"nobuffer\.pt.*'buffer'"):
        DSACT.load(bad)
    bad = _mutated(ckpt, tmp_path, lambda st: st["modules"].pop("policy"), "nopolicy.pt")
    with pytest.raises(ValueError, match=r"nopolicy\.pt.*policy"):
        DSACT.load(bad)
    bad = _mutated(ckpt, tmp_path, lambda st: st.update(algo="foo"), "foo.pt")
    with pytest.raises(ValueError, match=r"foo\.pt.*unknown algorithm 'foo'"):
        DSACT.load(bad)


def test_nan_weights_are_refused(ckpt, tmp_path):
    def poison(st):
        w = st["modules"]["policy"]["net.0.weight"]
        w[0, 0] = float("nan")

    bad = _mutated(ckpt, tmp_path, poison, "nan.pt")
    with pytest.raises(ValueError, match=r"nan\.pt.*non-finite.*policy"):
        DSACT.load(bad)


def test_crafted_env_id_never_imports_a_module(tmp_path, monkeypatch):
    """A checkpoint naming ``module:Name-v0`` must not make gymnasium import ``module``."""
    mod = "gradkit_evil_ckpt_marker"
    marker = tmp_path / "imported"
    (tmp_path / f"{mod}.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "agent.pt"
    DSACT("Pendulum-v1", seed=0, **TINY).save(path)
    bad = _mutated(path, tmp_path, lambda st: st.update(env_id=f"{mod}:Pendulum-v1"), "crafted.pt")
    with pytest.raises(ValueError, match=r"crafted\.pt.*env id"):
        DSACT.load(bad)
    bad = _mutated(path, tmp_path, lambda st: st.update(env_id="NotRegistered-v7"), "unreg.pt")
    with pytest.raises(ValueError, match=r"unreg\.pt.*not a registered"):
        DSACT.load(bad)
    assert not marker.exists() and mod not in sys.modules
    # an explicit env still loads such a file (the caller chose the env)
    assert isinstance(DSACT.load(bad, env="Pendulum-v1"), DSACT)


def test_checkpoint_with_non_finite_hyperparameter_is_refused(ckpt, tmp_path):
    bad = _mutated(ckpt, tmp_path, lambda st: st["hp"].update(gamma=float("nan")), "hp.pt")
    with pytest.raises(ValueError, match=r"hp\.pt.*gamma"):
        DSACT.load(bad)


@pytest.mark.parametrize("key,value", [("lr_actor", float("nan")), ("tau", float("inf")), ("reward_scale", float("nan")),
                                       ("lr_critic", -1.0)])
def test_non_finite_or_out_of_range_hyperparameters(key, value):
    with pytest.raises(ValueError, match=key):
        DSACT("Pendulum-v1", **{**TINY, key: value})


def test_load_into_the_wrong_class_is_a_clear_error(ckpt):
    with pytest.raises(TypeError, match="dsac-t"):
        SAC.load(ckpt)
    assert isinstance(DSACT.load(ckpt), DSACT) and not isinstance(DSACT.load(ckpt), DSACv1)


# ----------------------------------------------------------------------------- learning (runs in CI)
def test_td3_learns_pendulum_within_a_small_budget():
    """A few seconds: 2000 env steps, 1500 updates (seed 0 reaches about -280).  The untrained policy scores
    about -1400; after training the mean over 10 evaluation episodes must beat it by more than 3 standard
    errors of the difference and by at least 500."""
    TD3 = _td3()
    hp = dict(hidden=(64, 64), activation="relu", lr_critic=1e-3, lr_actor=1e-3, tau=0.05, batch_size=64,
              warmup=500, env_steps_per_update=1, buffer_size=10_000)
    agent = TD3("Pendulum-v1", seed=0, **hp)
    m0, _, r0 = agent.evaluate(10, return_episodes=True)
    agent.learn(2000)
    m1, _, r1 = agent.evaluate(10, return_episodes=True)
    se = np.sqrt(np.var(r0, ddof=1) / 10 + np.var(r1, ddof=1) / 10)
    assert m1 - m0 > max(500.0, 3 * se), (m0, m1, se)


# ----------------------------------------------------------------------------- the reward-scale decision
def test_reward_scale_claim_is_decided_with_its_standard_error():
    from gradkit_dsact.reproduce import less_sensitive, spread_with_se

    cells = {0.1: [-100.0, -120.0, -140.0], 1.0: [-110.0, -120.0, -130.0], 10.0: [-150.0, -170.0, -190.0]}
    spread, se = spread_with_se(cells)
    # by hand: means -120, -120, -170 -> max is the first of the tied cells (-120), min -170: spread 50
    assert spread == pytest.approx(50.0)
    assert se == pytest.approx(np.hypot(20 / np.sqrt(3), 20 / np.sqrt(3)))
    flat = (10.0, 5.0)
    assert less_sensitive(flat, (60.0, 5.0))[0]  # 50 apart, SE 7.1: decided
    assert not less_sensitive(flat, (20.0, 5.0))[0]  # 10 apart, SE 7.1: within 2 SE
    assert not less_sensitive(flat, flat)[0]  # an exact tie never passes
    assert not less_sensitive((10.0, float("nan")), (500.0, 1.0))[0]  # unknown error (one seed): undecided
