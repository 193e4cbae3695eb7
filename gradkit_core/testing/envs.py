"""Conformance suite for kind ``envs`` (gymnasium environments).

Subclass :class:`EnvConformance` and set:

``env_id``
    the gymnasium id (``"gradkit/AntOmni-v0"``); importing the plugin must already have
    registered it with gymnasium.
``component``
    the gradkit component name it is registered under (kind ``envs``); ``None`` skips the
    registry checks.
``component_kwargs``
    keyword arguments for ``gymnasium.make`` (e.g. a short ``episode_length``).
``skip_render_check``
    ``True`` for envs whose render modes need a display (MuJoCo ``"human"``); they should
    test rendering themselves with an offscreen mode.
``max_episode_steps``
    a random-action episode must end (terminated or truncated) within this many steps;
    ``None`` skips that check.

The rules checked: ``gymnasium.utils.env_checker.check_env`` passes on the unwrapped env;
reset and step return values that lie in the declared spaces with the documented types;
a non-finite (NaN, +inf, -inf) entry in a ``Box`` action is a ``ValueError`` and leaves the env
as it was (the next valid step gives what a fresh env gives: no silent clipping, zeroing or
physics reset);
``reset(seed=s)`` with the same actions reproduces the trajectory exactly (twice on one
env and across two envs); the id is registered with a *string* entry point (nothing is
imported before ``make``) and ``make`` builds the class that gradkit's component names.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional

import pytest


def _trajectory(env, seed: int, n_steps: int) -> List[Any]:
    import numpy as np

    obs, info = env.reset(seed=seed)
    env.action_space.seed(seed)
    out: List[Any] = [np.array(obs, copy=True)]
    for _ in range(n_steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        out.append((np.array(obs, copy=True), float(reward), bool(terminated), bool(truncated)))
        if terminated or truncated:
            break
    return out


def _same(a: List[Any], b: List[Any]) -> bool:
    import numpy as np

    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if isinstance(x, tuple):
            if not (np.array_equal(x[0], y[0]) and x[1:] == y[1:]):
                return False
        elif not np.array_equal(x, y):
            return False
    return True


class EnvConformance:
    env_id: str = ""
    component: Optional[str] = None
    component_kwargs: Dict[str, Any] = {}
    skip_render_check: bool = False
    max_episode_steps: Optional[int] = None
    #: steps of the seeding test
    n_steps: int = 30

    # -------------------------------------------------------------- construction
    def make(self, **overrides):
        import gymnasium

        kw = dict(self.component_kwargs)
        kw.update(overrides)
        return gymnasium.make(self.env_id, **kw)

    # -------------------------------------------------------------- checks
    def test_check_env(self):
        from gymnasium.utils.env_checker import check_env

        env = self.make()
        try:
            check_env(env.unwrapped, skip_render_check=self.skip_render_check)
        finally:
            env.close()

    def test_spaces(self):
        import gymnasium
        import numpy as np

        env = self.make()
        try:
            assert isinstance(env.observation_space, gymnasium.spaces.Space)
            assert isinstance(env.action_space, gymnasium.spaces.Space)
            obs, info = env.reset(seed=0)
            assert env.observation_space.contains(obs), f"reset observation {obs!r} outside {env.observation_space}"
            assert isinstance(info, dict)
            env.action_space.seed(0)
            for _ in range(self.n_steps):
                action = env.action_space.sample()
                assert env.action_space.contains(action)
                obs, reward, terminated, truncated, info = env.step(action)
                assert env.observation_space.contains(obs), f"step observation outside {env.observation_space}"
                assert isinstance(reward, (float, int, np.floating, np.integer)) and math.isfinite(float(reward))
                assert isinstance(terminated, (bool, np.bool_)) and isinstance(truncated, (bool, np.bool_))
                assert isinstance(info, dict)
                if terminated or truncated:
                    obs, info = env.reset()
        finally:
            env.close()

    def test_seeding_reproduces_trajectories(self):
        env_a, env_b = self.make(), self.make()
        try:
            first = _trajectory(env_a, 123, self.n_steps)
            again = _trajectory(env_a, 123, self.n_steps)
            other = _trajectory(env_b, 123, self.n_steps)
            assert _same(first, again), "reset(seed=123) twice on one env gave different trajectories"
            assert _same(first, other), "two envs reset with seed 123 gave different trajectories"
        finally:
            env_a.close()
            env_b.close()

    def test_non_finite_action_is_a_clear_error(self):
        import gymnasium
        import numpy as np

        env, ref = self.make(), self.make()
        try:
            if not isinstance(env.action_space, gymnasium.spaces.Box):
                pytest.skip("the rule is for Box action spaces")
            env.reset(seed=7)
            env.action_space.seed(7)
            action = np.asarray(env.action_space.sample())
            for bad in (np.nan, np.inf, -np.inf):
                x = np.array(action, dtype=np.float64)
                x.reshape(-1)[0] = bad
                with pytest.raises(ValueError) as exc:
                    env.step(x.astype(action.dtype) if np.issubdtype(action.dtype, np.floating) else x)
                assert "finite" in str(exc.value).lower() or "nan" in str(exc.value).lower(), (
                    f"the error should say the action is not finite, got: {exc.value}"
                )
            # the refused steps changed nothing: the next valid step equals a fresh env's first step
            got = env.step(action)
            ref.reset(seed=7)
            want = ref.step(action)
            assert np.array_equal(np.asarray(got[0]), np.asarray(want[0])) and float(got[1]) == float(want[1]), (
                "a refused non-finite action must leave the env unchanged"
            )
        finally:
            env.close()
            ref.close()

    def test_episode_ends(self):
        if self.max_episode_steps is None:
            pytest.skip("max_episode_steps not set")
        env = self.make()
        try:
            env.reset(seed=0)
            env.action_space.seed(0)
            for _ in range(self.max_episode_steps):
                _, _, terminated, truncated, _ = env.step(env.action_space.sample())
                if terminated or truncated:
                    break
            assert terminated or truncated, f"no episode end within {self.max_episode_steps} steps"
        finally:
            env.close()

    def test_registered_with_string_entry_point(self):
        import gymnasium

        assert self.env_id in gymnasium.registry, f"{self.env_id!r} is not registered with gymnasium"
        spec = gymnasium.spec(self.env_id)
        assert isinstance(spec.entry_point, str) and ":" in spec.entry_point, (
            f"{self.env_id!r} must be registered with a 'module:Class' string entry point, "
            f"got {spec.entry_point!r}"
        )

    def test_gradkit_component_makes_the_registered_class(self):
        if self.component is None:
            pytest.skip("component not set")
        import gymnasium

        import gradkit_core as gk

        spec = gk.info(self.component, kind="envs")
        assert spec.kind == "envs"
        cls = gk.get(self.component, kind="envs")
        assert isinstance(spec.target, str) and spec.target == gymnasium.spec(self.env_id).entry_point
        env = self.make()
        try:
            assert type(env.unwrapped) is cls, f"make({self.env_id!r}) built {type(env.unwrapped)}, gradkit names {cls}"
        finally:
            env.close()
        direct = gk.create(self.component, kind="envs", **self.component_kwargs)
        try:
            assert type(direct) is cls
            assert direct.observation_space == env.observation_space
            assert direct.action_space == env.action_space
        finally:
            direct.close()
