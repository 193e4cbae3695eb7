"""Gymnasium wrappers of the thin-shell tasks (ids in the ``gradkit/`` namespace).

Observation: all vertex positions and the gripper pad centres (float32, metres, within +-10).  Action: per-pad translation
in [-1, 1]^3, scaled by the simulator's ``max_moving_dist`` (1 mm); an action outside the action space
raises ValueError.  The per-step reward is the increase of the task reward, so an episode's return equals
the task reward of the final state.  A Newton solve that fails ends the episode (``terminated``) with
reward -1 and ``info["newton_failed"] = True`` (ThinShellLab's early stop on failure).

The differentiable path for gradient methods: ``env.unwrapped.rollout(actions, params=None)`` returns the
task reward as a torch scalar that backpropagates to the normalised actions (T, action_dim) and params.
"""

from __future__ import annotations

from typing import Optional

import gymnasium as gym
import numpy as np
import torch

from .mesh import DTYPE
from .sim import NewtonError
from .registration import ENV_IDS, register_envs
from .tasks import make_task, sliding_initial_state

OBS_BOUND = 10.0


class ThinShellEnv(gym.Env):
    metadata = {"render_modes": []}
    task_name = "separate"

    def __init__(self, render_mode: Optional[str] = None, **task_kw):
        if render_mode is not None:
            raise ValueError(f"render_mode {render_mode!r} is not supported; thin-shell envs have no renderer")
        self.task = make_task(self.task_name, **task_kw)
        self.sim = self.task.sim
        self.horizon = self.task.horizon
        G = len(self.sim.scene.pads)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (3 * G,), dtype=np.float32)
        nobs = 3 * self.sim.n_vertices + 3 * G
        # positions in metres; a task moves things by centimetres, so +-10 m never clips in practice
        self.observation_space = gym.spaces.Box(-OBS_BOUND, OBS_BOUND, (nobs,), dtype=np.float32)
        self._state = None
        self._s0 = None
        self._t = 0

    def _initial_state(self):
        if self.task.name == "sliding":
            return sliding_initial_state(self.task)
        return self.sim.initial_state()

    def _obs(self):
        s = self._state
        obs = torch.cat([s.x.reshape(-1), s.pads.reshape(-1)]).detach().numpy()
        return np.clip(obs, -OBS_BOUND, OBS_BOUND).astype(np.float32)

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        self._state = self._s0 = self._initial_state()
        self._t = 0
        self._R = 0.0
        return self._obs(), {}

    def step(self, action):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != self.action_space.shape:
            raise ValueError(f"action must have shape {self.action_space.shape}, got {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"action must be finite, got {a} (NaN or inf); expected numbers in [-1, 1] "
                             "(x max_moving_dist per step)")
        if np.abs(a).max() > 1.0 + 1e-6:
            raise ValueError(f"action {a} is outside the gripper limits [-1, 1] (x max_moving_dist "
                             f"{self.sim.max_moving_dist} m per step)")
        a = np.clip(a, -1.0, 1.0) * self.sim.max_moving_dist
        try:
            with torch.no_grad():
                self._state = self.sim.step(self._state, torch.as_tensor(a, dtype=DTYPE))
        except NewtonError as exc:
            self._t += 1
            return self._obs(), -1.0, True, False, {"newton_failed": True, "error": str(exc)}
        self._t += 1
        with torch.no_grad():
            R = float(self.task.reward([self._s0, self._state]))
        r, self._R = R - self._R, R
        truncated = self._t >= self.horizon
        return self._obs(), float(r), False, truncated, {"task_reward": R, "newton_failed": False,
                                                          "newton_iterations": self.sim.last_stats.iterations}

    def rollout(self, actions, params=None) -> torch.Tensor:
        """Differentiable task reward of normalised actions (T, action_dim) in [-1, 1]."""
        acts = torch.as_tensor(actions, dtype=DTYPE) if not isinstance(actions, torch.Tensor) else actions
        acts = acts.reshape(acts.shape[0], -1, 3) * self.sim.max_moving_dist
        return self.task.rollout_reward(acts, params=params, state=self._initial_state())


class ThinShellSeparateEnv(ThinShellEnv):
    """Drag the top of two stacked sheets off the bottom one with a spherical pad."""

    task_name = "separate"


class ThinShellLiftEnv(ThinShellEnv):
    """Two grippers holding a sheet's edges lift the block resting on it toward a target."""

    task_name = "lift"


class ThinShellFoldEnv(ThinShellEnv):
    """Fold a sheet (held at one edge) to target dihedral angles on its crease row."""

    task_name = "fold"


__all__ = ["ENV_IDS", "ThinShellEnv", "ThinShellSeparateEnv", "ThinShellLiftEnv", "ThinShellFoldEnv"]

register_envs()
