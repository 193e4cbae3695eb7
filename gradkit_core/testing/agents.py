"""Conformance suite for agents (kind ``agents``).

The contract (see :func:`gradkit_core.hookspecs.gradkit_register_agents`) follows
stable-baselines3's signatures::

    agent = gk.create(NAME, env, seed=0, **hp)      # env: a gymnasium.Env (or an id string)
    agent.learn(total_timesteps, callback=None)     # returns the agent itself
    action, state = agent.predict(obs, state=None, episode_start=None, deterministic=False)
    agent.save(path)
    agent = type(agent).load(path, env=env)         # plain format or torch.load(weights_only=True)
    mean, std = agent.evaluate(n_episodes)

so that ``stable_baselines3.common.evaluation.evaluate_policy(agent, env)`` works.

What the suite checks:

* ``learn(total_timesteps=..., callback=None)`` returns the agent; ``predict`` returns a
  pair ``(action, state)`` with the action inside the action space for a single observation
  and a batch of actions for a batch ``(n, *obs_shape)``; deterministic predictions repeat;
* stable-baselines3's ``evaluate_policy`` runs on the agent (skipped without SB3);
* a non-finite (NaN/inf) observation passed to ``predict`` is a ``ValueError``;
* an empty or truncated checkpoint file is a ``ValueError`` that names the file;
* a save/load round trip gives identical deterministic predictions, and the file is
  readable by a safe loader (``torch.load(weights_only=True)``, ``numpy.load`` without
  pickles, or JSON) -- never an arbitrary pickle;
* ``evaluate(n)`` returns a finite mean and a non-negative std;
* seeded determinism: two agents created with the same seed and trained for the same
  number of steps on fresh envs predict identically; a different seed differs;
* a discrete action space is refused with a clear ``TypeError``/``ValueError`` that
  names the action space.

Subclass :class:`AgentConformance` in a plugin's tests and supply a small env::

    from gradkit_core.testing.agents import AgentConformance

    class TestDSACT(AgentConformance):
        component = "dsac-t"
        component_kwargs = {"hidden": (16, 16), "warmup": 50, "batch_size": 16}
        learn_steps = 120

        @pytest.fixture
        def make_env(self):                  # a callable returning a fresh env (or env id)
            return lambda: gymnasium.make("Pendulum-v1")

Override :meth:`make_agent` to build the agent without the registry, and
:meth:`make_discrete_env` when the agent legitimately supports discrete actions
(then set ``supports_discrete = True``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import pytest


class AgentConformance:
    #: registered component name (``None``: override :meth:`make_agent`)
    component: Optional[str] = None
    #: keyword hyperparameters for ``create(name, env, seed=..., **component_kwargs)`` (keep them tiny)
    component_kwargs: Dict[str, Any] = {}
    #: env steps for each ``learn`` call in the suite (enough to do some gradient updates)
    learn_steps: int = 200
    #: episodes for the ``evaluate`` check
    eval_episodes: int = 2
    #: set True for agents that accept discrete action spaces
    supports_discrete: bool = False

    # ------------------------------------------------------------------ hooks
    def make_agent(self, env: Any, seed: int = 0):
        import gradkit_core as gk

        if self.component is None:
            raise TypeError("set component or override make_agent()")
        return gk.create(self.component, env, kind="agents", seed=seed, **self.component_kwargs)

    def make_discrete_env(self):
        import gymnasium as gym

        return gym.make("CartPole-v1")

    @pytest.fixture
    def make_env(self):  # pragma: no cover - subclasses must supply it
        raise TypeError("AgentConformance subclasses must define a `make_env` fixture returning an env factory")

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _space(env: Any):
        import gymnasium as gym

        return (gym.make(env) if isinstance(env, str) else env)

    @staticmethod
    def _same(a, b) -> bool:
        import numpy as np

        return np.array_equal(np.asarray(a), np.asarray(b))

    @staticmethod
    def _probe_observations(env_like: Any, n: int = 5):
        """A few fixed observations: reset states under fixed seeds."""
        env = AgentConformance._space(env_like)
        return [env.reset(seed=1000 + i)[0] for i in range(n)]

    @staticmethod
    def _act(agent, obs, **kw):
        out = agent.predict(obs, **kw)
        assert isinstance(out, tuple) and len(out) == 2, (
            f"predict() must return (action, state) as in stable-baselines3, got {type(out).__name__}"
        )
        return out[0]

    # ------------------------------------------------------------------ tests
    def test_learn_returns_agent_and_predict_is_in_action_space(self, make_env):
        import numpy as np

        env = make_env()
        agent = self.make_agent(env, seed=0)
        assert agent.learn(total_timesteps=self.learn_steps, callback=None) is agent, (
            "learn(total_timesteps, callback=None) must return the agent itself"
        )
        space = self._space(env).action_space
        probes = self._probe_observations(make_env())
        for obs in probes:
            a = self._act(agent, obs, deterministic=True)
            assert space.contains(a), f"predict() returned {a!r}, not an element of {space}"
            assert self._same(a, self._act(agent, obs, deterministic=True)), "deterministic predict must repeat"
        action, state = agent.predict(probes[0], state=None, episode_start=None, deterministic=True)
        assert state is None, "a non-recurrent agent returns state=None for state=None"
        batch = self._act(agent, np.stack(probes), deterministic=True)
        assert np.shape(batch) == (len(probes), *space.shape), (
            f"predict() on a batch of {len(probes)} observations must give {len(probes)} actions, got {np.shape(batch)}"
        )
        assert np.allclose(np.asarray(batch[0], float), np.asarray(action, float), rtol=1e-5, atol=1e-5), (
            "a batch prediction must equal the single ones (up to float rounding)"
        )

    def test_sb3_evaluate_policy_runs(self, make_env):
        pytest.importorskip("stable_baselines3")
        import math

        from stable_baselines3.common.evaluation import evaluate_policy

        agent = self.make_agent(make_env(), seed=0)
        env = self._space(make_env())
        mean, std = evaluate_policy(agent, env, n_eval_episodes=self.eval_episodes, deterministic=True, warn=False)
        assert math.isfinite(float(mean)) and float(std) >= 0

    def test_non_finite_observation_is_a_clear_error(self, make_env):
        import numpy as np

        agent = self.make_agent(make_env(), seed=0)
        obs = np.array(self._probe_observations(make_env(), 1)[0], dtype=np.float64)
        for bad in (np.nan, np.inf):
            x = obs.copy()
            x.reshape(-1)[0] = bad
            with pytest.raises(ValueError):
                agent.predict(x, deterministic=True)

    def test_broken_checkpoint_files_are_clear_errors(self, make_env, tmp_path: Path):
        agent = self.make_agent(make_env(), seed=0)
        path = tmp_path / "agent.ckpt"
        agent.save(path)
        if not path.is_file():
            pytest.skip("save(path) writes a directory; test broken files in the plugin")
        data = path.read_bytes()
        (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 2])
        (tmp_path / "empty.ckpt").write_bytes(b"")
        for name in ("truncated.ckpt", "empty.ckpt"):
            with pytest.raises(ValueError) as exc:
                type(agent).load(tmp_path / name, env=make_env())
            assert name in str(exc.value), f"the error must name the file {name}, got: {exc.value}"

    def test_save_load_round_trip(self, make_env, tmp_path: Path):
        agent = self.make_agent(make_env(), seed=0).learn(self.learn_steps)
        path = tmp_path / "agent.ckpt"
        agent.save(path)
        files = [path] if path.exists() else sorted(p for p in tmp_path.rglob("*") if p.is_file())
        assert files, "save(path) wrote nothing"
        for f in files:
            assert _safe_loadable(f), f"{f.name} is not readable by a safe loader (torch weights_only / npz / json)"
        loaded = type(agent).load(path, env=make_env())
        for obs in self._probe_observations(make_env()):
            assert self._same(self._act(agent, obs, deterministic=True), self._act(loaded, obs, deterministic=True)), (
                "a loaded agent must predict exactly as the saved one"
            )

    def test_evaluate_returns_mean_and_std(self, make_env):
        import math

        agent = self.make_agent(make_env(), seed=0)
        out = agent.evaluate(self.eval_episodes)
        mean, std = out[0], out[1]
        assert math.isfinite(float(mean)), f"evaluate() mean must be finite, got {mean}"
        assert float(std) >= 0 and math.isfinite(float(std)), f"evaluate() std must be finite and >= 0, got {std}"

    def test_seeded_determinism(self, make_env):
        a = self.make_agent(make_env(), seed=3).learn(self.learn_steps)
        b = self.make_agent(make_env(), seed=3).learn(self.learn_steps)
        c = self.make_agent(make_env(), seed=4).learn(self.learn_steps)
        probes = self._probe_observations(make_env())
        det = dict(deterministic=True)
        assert all(self._same(self._act(a, o, **det), self._act(b, o, **det)) for o in probes), (
            "same seed must give the same agent"
        )
        assert not all(self._same(self._act(a, o, **det), self._act(c, o, **det)) for o in probes), (
            "a different seed should differ"
        )

    def test_discrete_action_space_is_a_clear_error(self):
        if self.supports_discrete:
            pytest.skip("agent supports discrete action spaces")
        with pytest.raises((TypeError, ValueError)) as exc:
            self.make_agent(self.make_discrete_env(), seed=0)
        msg = str(exc.value).lower()
        assert "action" in msg and ("discrete" in msg or "box" in msg), (
            f"the error should name the action space problem, got: {exc.value}"
        )


def _safe_loadable(path: Path) -> bool:
    """True when ``path`` opens with a loader that cannot run arbitrary code."""
    try:
        json.loads(path.read_text())
        return True
    except Exception:  # noqa: BLE001 - try the next format
        pass
    try:
        import numpy as np

        loaded = np.load(path, allow_pickle=False)
        if hasattr(loaded, "close"):
            loaded.close()
        return True
    except Exception:  # noqa: BLE001
        pass
    try:
        import torch

        torch.load(path, weights_only=True, map_location="cpu")
        return True
    except Exception:  # noqa: BLE001
        return False
