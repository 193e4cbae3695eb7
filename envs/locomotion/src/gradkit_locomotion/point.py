"""``gradkit/PointOmni-v0``: a 2-D point mass with the omni conflict, in plain numpy (no MuJoCo).

State: position ``p`` in the box ``[-1, 1]^2`` and velocity ``v``.  Action: a force ``a`` in
``[-1, 1]^2``.  One step (semi-implicit Euler, ``dt = 0.04``)::

    v <- v + dt * a ;  p <- p + dt * v ;  at a wall p is clipped and that velocity component zeroed

Reward ``1 - 0.5 * ||a||^2`` (in ``[0, 1]``: an energy term, so the fittest policy stands still),
descriptor = final position in ``[-1, 1]^2`` (reaching far costs energy: the conflict that makes
fitness-greedy policy gradients collapse diversity in the omni tasks).  Observation
``(p, v, (T - t) / T)``.  ``T = 50``.  :class:`PointOmniVectorEnv` steps ``n`` points at once
(gymnasium ``VectorEnv``, used by ``gymnasium.make_vec(..., vectorization_mode="vector_entry_point")``).
"""

from __future__ import annotations

from typing import Optional, Tuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.utils.seeding import np_random
from gymnasium.vector.utils import batch_space

DT = 0.04
V_MAX = 2.0  # |v| <= T * dt * max|a| for T = 50


def point_step(pos: np.ndarray, vel: np.ndarray, action: np.ndarray, dt: float = DT):
    """One batched step on ``(..., 2)`` arrays; returns new ``(pos, vel, reward)`` (inputs untouched)."""
    a = np.clip(action, -1.0, 1.0)
    vel = np.clip(vel + dt * a, -V_MAX, V_MAX)
    pos = pos + dt * vel
    hit = np.abs(pos) > 1.0
    pos = np.clip(pos, -1.0, 1.0)
    vel = np.where(hit, 0.0, vel)
    reward = 1.0 - 0.5 * np.sum(a * a, axis=-1)
    return pos, vel, reward


def _obs_space() -> spaces.Box:
    low = np.array([-1.0, -1.0, -V_MAX, -V_MAX, 0.0])
    high = np.array([1.0, 1.0, V_MAX, V_MAX, 1.0])
    return spaces.Box(low, high, dtype=np.float64)


def _check_len(episode_length) -> int:
    if isinstance(episode_length, bool) or not isinstance(episode_length, (int, np.integer)) or episode_length < 1:
        raise ValueError(f"episode_length must be a positive integer, got {episode_length!r}")
    return int(episode_length)


def _check_finite(action: np.ndarray) -> None:
    if not np.all(np.isfinite(action)):
        raise ValueError(f"PointOmni action must be finite, got {action.tolist()} (NaN or inf entries); "
                         "the step was not taken")


class PointOmniEnv(gym.Env):
    """Single point mass; see the module docstring."""

    metadata = {"render_modes": [], "render_fps": int(round(1.0 / DT))}
    descriptor_kind = "final_xy"

    def __init__(self, episode_length: int = 50, reset_noise_scale: float = 0.0):
        self.episode_length = _check_len(episode_length)
        self.reset_noise_scale = float(reset_noise_scale)
        self.observation_space = _obs_space()
        self.action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.render_mode = None
        self._pos = np.zeros(2)
        self._vel = np.zeros(2)
        self._t = 0

    @property
    def descriptor_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        return -np.ones(2), np.ones(2)

    @property
    def descriptor_dim(self) -> int:
        return 2

    def _obs(self) -> np.ndarray:
        return np.concatenate([self._pos, self._vel, [(self.episode_length - self._t) / self.episode_length]])

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self._pos = self.np_random.uniform(-1, 1, size=2) * self.reset_noise_scale
        self._vel = np.zeros(2)
        self._t = 0
        return self._obs(), {"descriptor": self._pos.copy(), "valid_steps": 0}

    def step(self, action):
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (2,):
            raise ValueError(f"PointOmni action must have shape (2,), got {action.shape}")
        _check_finite(action)
        self._pos, self._vel, reward = point_step(self._pos, self._vel, action)
        self._t += 1
        truncated = self._t >= self.episode_length
        info = {"descriptor": self._pos.copy(), "valid_steps": self._t}
        if truncated:
            info["final_descriptor"] = self._pos.copy()
        return self._obs(), float(reward), False, truncated, info


class PointOmniVectorEnv(VectorEnv):
    """``num_envs`` point masses stepped together in numpy (gymnasium ``VectorEnv``, next-step autoreset).

    All sub-envs share ``T`` and never terminate, so they end together; the step after the end
    resets every sub-env (gymnasium's ``NEXT_STEP`` autoreset) and ignores its action.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": [], "render_fps": int(round(1.0 / DT))}

    def __init__(self, num_envs: int, episode_length: int = 50, reset_noise_scale: float = 0.0, **kwargs):
        if kwargs:
            raise TypeError(f"PointOmniVectorEnv got unexpected arguments {sorted(kwargs)}")
        self.num_envs = _check_len(num_envs)
        self.episode_length = _check_len(episode_length)
        self.reset_noise_scale = float(reset_noise_scale)
        self.single_observation_space = _obs_space()
        self.single_action_space = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.render_mode = None
        self._pos = np.zeros((self.num_envs, 2))
        self._vel = np.zeros((self.num_envs, 2))
        self._t = 0
        self._needs_reset = False

    @property
    def descriptor_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        return -np.ones(2), np.ones(2)

    def _obs(self) -> np.ndarray:
        tf = np.full((self.num_envs, 1), (self.episode_length - self._t) / self.episode_length)
        return np.concatenate([self._pos, self._vel, tf], axis=1)

    def _info(self, final: bool) -> dict:
        mask = np.ones(self.num_envs, dtype=bool)
        info = {"descriptor": self._pos.copy(), "_descriptor": mask,
                "valid_steps": np.full(self.num_envs, self._t), "_valid_steps": mask}
        if final:
            info["final_descriptor"] = self._pos.copy()
            info["_final_descriptor"] = mask.copy()
        return info

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, (list, tuple)):
            seed = None if seed[0] is None else int(seed[0])
        super().reset(seed=seed)
        # sub-env i draws its start from its own generator seeded with seed + i, as gymnasium's
        # SyncVectorEnv seeds its sub-envs: row i equals PointOmniEnv reset with seed + i, whatever
        # num_envs is (so a batch split into chunks starts each episode where the whole batch would)
        if seed is not None or getattr(self, "_rngs", None) is None:
            self._rngs = [np_random(None if seed is None else seed + i)[0] for i in range(self.num_envs)]
        self._pos = np.stack([r.uniform(-1, 1, size=2) for r in self._rngs]) * self.reset_noise_scale
        self._vel = np.zeros((self.num_envs, 2))
        self._t = 0
        self._needs_reset = False
        return self._obs(), self._info(False)

    def step(self, actions):
        actions = np.asarray(actions, dtype=np.float64)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(f"actions must have shape ({self.num_envs}, 2), got {actions.shape}")
        _check_finite(actions)
        if self._needs_reset:
            obs, info = self.reset()
            zeros = np.zeros(self.num_envs, dtype=bool)
            return obs, np.zeros(self.num_envs), zeros, zeros.copy(), info
        self._pos, self._vel, reward = point_step(self._pos, self._vel, actions)
        self._t += 1
        done = self._t >= self.episode_length
        self._needs_reset = done
        trunc = np.full(self.num_envs, done)
        return self._obs(), reward, np.zeros(self.num_envs, dtype=bool), trunc, self._info(done)
