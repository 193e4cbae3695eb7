"""stable-baselines3-compatible agent API, checkpoint errors and checkpoint safety for the QD agents."""

from __future__ import annotations

import sys

import gymnasium
import numpy as np
import pytest
import torch

import gradkit_locomotion  # noqa: F401  (registers the task ids)
from gradkit_dcgme.algorithm import DCGME, MAPElites, PGAME, QDAgent


def test_predict_returns_action_and_state(tiny):
    agent = DCGME("gradkit/PointOmni-v0", seed=0, **tiny).learn(1)
    obs = np.zeros(5)
    out = agent.predict(obs, deterministic=True)
    assert isinstance(out, tuple) and len(out) == 2
    act, state = out
    assert act.shape == (2,) and state is None
    marker = (np.zeros(1),)
    again, st = agent.predict(obs, state=marker, episode_start=np.ones(1, bool))  # SB3 positional/keyword form
    assert st is marker and np.array_equal(again, act)  # QD policies are deterministic
    cond, _ = agent.predict(obs, descriptor=[0.5, -0.5])
    assert cond.shape == (2,)


def test_learn_takes_sb3_arguments(tiny):
    agent = MAPElites("gradkit/PointOmni-v0", seed=0, **tiny)
    seen = []
    assert agent.learn(total_timesteps=3, callback=lambda a: seen.append(a.iteration), progress_bar=False) is agent
    assert seen == [1, 2, 3]
    agent.learn(5, callback=lambda a: a.iteration < 4)
    assert agent.iteration == 4
    with pytest.raises(TypeError, match="callback"):
        agent.learn(1, callback=3)


@pytest.mark.parametrize("klass", [DCGME, PGAME, MAPElites])
def test_sb3_evaluate_policy_equals_the_agents_own_rollout(klass, tiny):
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.vec_env import DummyVecEnv

    agent = klass("gradkit/PointOmni-v0", seed=0, **tiny).learn(1)
    venv = DummyVecEnv([lambda: gymnasium.make("gradkit/PointOmni-v0")])
    venv.seed(3)
    rewards, lengths = evaluate_policy(agent, venv, n_eval_episodes=1, return_episode_rewards=True, warn=False)
    env = gymnasium.make("gradkit/PointOmni-v0")
    obs, _ = env.reset(seed=3)
    ret, done, n = 0.0, False, 0
    while not done:
        obs, r, term, trunc, _ = env.step(agent.predict(obs)[0])
        ret, n, done = ret + float(r), n + 1, term or trunc
    assert lengths == [n] == [50]
    assert rewards[0] == pytest.approx(ret, rel=1e-5)


# ----------------------------------------------------------------------------- checkpoint errors
@pytest.fixture
def ckpt(tmp_path, tiny):
    return DCGME("gradkit/PointOmni-v0", seed=0, **tiny).learn(1).save(tmp_path / "agent.pt")


def _mutated(path, fn, name):
    st = torch.load(path, weights_only=True)
    fn(st)
    out = path.parent / name
    torch.save(st, out)
    return out


def test_truncated_empty_and_missing_files(ckpt):
    data = ckpt.read_bytes()
    (ckpt.parent / "truncated.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt.*(truncated|corrupt)"):
        QDAgent.load(ckpt.parent / "truncated.pt")
    (ckpt.parent / "empty.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.pt.*empty"):
        QDAgent.load(ckpt.parent / "empty.pt")
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        QDAgent.load(ckpt.parent / "nothere.pt")


def test_missing_key_and_unknown_algorithm(ckpt):
    with pytest.raises(ValueError, match=r"noarchive\.pt.*'archive'"):
        QDAgent.load(_mutated(ckpt, lambda st: st.pop("archive"), "noarchive.pt"))
    with pytest.raises(ValueError, match=r"noactor\.pt.*'actor'"):
        QDAgent.load(_mutated(ckpt, lambda st: st.pop("actor"), "noactor.pt"))
    with pytest.raises(ValueError, match=r"foo\.pt.*unknown algorithm 'foo'"):
        QDAgent.load(_mutated(ckpt, lambda st: st.update(algorithm="foo"), "foo.pt"))


def test_nan_weights_or_fitness_are_refused(ckpt):
    def poison_actor(st):
        next(iter(st["actor"].values())).view(-1)[0] = float("nan")

    with pytest.raises(ValueError, match=r"nanactor\.pt.*non-finite.*actor"):
        QDAgent.load(_mutated(ckpt, poison_actor, "nanactor.pt"))

    def poison_genome(st):
        filled = torch.isfinite(st["archive"]["fitness"])
        st["archive"]["genomes"][int(torch.nonzero(filled)[0])] = float("nan")

    with pytest.raises(ValueError, match=r"nangenome\.pt.*non-finite.*genomes"):
        QDAgent.load(_mutated(ckpt, poison_genome, "nangenome.pt"))

    def poison_fitness(st):
        st["archive"]["fitness"][0] = float("nan")

    with pytest.raises(ValueError, match=r"nanfit\.pt.*fitness"):
        QDAgent.load(_mutated(ckpt, poison_fitness, "nanfit.pt"))


def test_crafted_env_id_never_imports_a_module(ckpt, tmp_path, monkeypatch):
    mod = "gradkit_evil_dcgme_marker"
    marker = tmp_path / "imported"
    (tmp_path / f"{mod}.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    bad = _mutated(ckpt, lambda st: st.update(env_id=f"{mod}:PointOmni-v0"), "crafted.pt")
    with pytest.raises(ValueError, match=r"crafted\.pt.*env id"):
        QDAgent.load(bad)
    bad2 = _mutated(ckpt, lambda st: st.update(env_id=f"{mod}:gradkit/PointOmni-v0"), "crafted2.pt")
    with pytest.raises(ValueError, match=r"crafted2\.pt.*env id"):
        QDAgent.load(bad2)
    assert not marker.exists() and mod not in sys.modules
    # the caller may name the env explicitly
    assert isinstance(QDAgent.load(bad, env="gradkit/PointOmni-v0"), DCGME)


def test_crafted_env_kwargs_are_checked(ckpt):
    bad = _mutated(ckpt, lambda st: st.update(env_kwargs_json='{"episode_length": "x"}'), "kw.pt")
    with pytest.raises(ValueError, match=r"kw\.pt"):
        QDAgent.load(bad)


def test_elites_are_reevaluated_under_random_starts(tiny):
    """With random starts (PointOmni reset noise) and ``reeval_every=1`` every elite is evaluated again after
    each iteration (the running-mean arithmetic is pinned in test_archive.py); re-evaluations are counted."""
    agent = MAPElites("gradkit/PointOmni-v0", seed=0, env_kwargs={"reset_noise_scale": 0.5},
                      **{**tiny, "reeval_every": 1}).learn(2)
    a = agent.archive
    assert agent.n_reevals > 0 and agent.metrics()["reevaluations"] == agent.n_reevals
    assert a.counts[a.filled].max() >= 2 and a.counts[a.filled].min() >= 1
    with pytest.raises(ValueError, match="reeval_every"):
        MAPElites("gradkit/PointOmni-v0", **{**tiny, "reeval_every": -1})


def test_fixed_start_evaluations_are_exact(tiny):
    """Default tasks start from a fixed state: the same genome always gets the same fitness and descriptor."""
    agent = MAPElites("gradkit/PointOmni-v0", seed=0, **tiny).learn(1)
    idx = np.flatnonzero(agent.archive.filled)[:4]
    g = torch.from_numpy(agent.archive.genomes[idx].copy())
    o1 = agent.evaluator.rollout(g, agent.shape, seed=1)
    o2 = agent.evaluator.rollout(g, agent.shape, seed=999)
    np.testing.assert_array_equal(o1["fitness"], o2["fitness"])
    np.testing.assert_array_equal(o1["fitness"], agent.archive.fitness[idx])
