"""MuJoCo quality-diversity locomotion tasks (the DCG-MAP-Elites / QDax task set) on gymnasium v5.

Each task is a :class:`gymnasium.Env` that owns a gymnasium v5 MuJoCo env (``base_env``) and adds
what the QD papers put around it (QDax ``locomotion_wrappers.py``, ``wrappers.py``,
``bd_extractors.py``):

* a **behaviour descriptor** -- ``"feet_contact"``: for every foot the fraction of the *valid*
  (non-terminated) steps on which a (foot, floor) contact exists in ``data.contact``;
  ``"final_xy"``: the torso's ``qpos[:2]`` at the last valid step, clipped to the descriptor box;
* **non-negative rewards** (QDax ``ClipRewardWrapper``): ``max(r + reward_offset, 0)``; the omni
  tasks drop the forward term and add 3.03 per step (survive + ctrl + contact + 3.03);
* a **time-remaining feature** ``(T - t) / T`` appended to the observation (QDax
  ``TimeAwarenessWrapper``): 1 at reset, ``1/T`` before the last action, 0 on the final observation;
* episodes truncated at ``episode_length`` steps (gymnasium's unhealthy termination is kept);
* a **fixed start** by default (``fixed_start=True``: the base env's ``reset_noise_scale`` is 0, so
  every episode starts from the model's initial pose at rest and an evaluation is deterministic);
  ``fixed_start=False`` restores gymnasium's random reset noise;
* a non-finite (NaN/inf) action is a ``ValueError`` raised before the physics is touched;
* on gymnasium's own v5 HalfCheetah/Hopper/Walker2d/Ant the v5 step is computed by
  :mod:`gradkit_locomotion.fused` (bit-for-bit gymnasium's result, without its per-step Python
  overhead); ``fused_step=False`` calls ``base_env.step`` instead.

``info`` of every step carries ``"descriptor"`` (the running descriptor) and ``"valid_steps"``; the
step that ends the episode also carries ``"final_descriptor"``.  ``descriptor_bounds`` gives the
box ``(low, high)`` a consumer uses to normalise descriptors to ``[-1, 1]``.
"""

from __future__ import annotations

import math
from importlib import resources
from typing import Any, Dict, Optional, Sequence, Tuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.utils import EzPickle

from .fused import sum_squares

_F64, _F32 = np.dtype(np.float64), np.dtype(np.float32)

FEET_CONTACT = "feet_contact"
FINAL_XY = "final_xy"
OMNI_REWARD_OFFSET = 3.03

#: feet geoms of the gymnasium v5 assets, in descriptor order
FEET = {
    "HalfCheetah": ("bfoot", "ffoot"),
    "Walker2d": ("foot_geom", "foot_left_geom"),
    "Hopper": ("foot_geom",),
    "Ant": ("left_ankle_geom", "right_ankle_geom", "third_ankle_geom", "fourth_ankle_geom"),
}
FLOOR = "floor"


def check_finite_action(action: Any) -> None:
    """``ValueError`` unless every entry of ``action`` is finite (called before the env changes).

    The common case costs one ``tolist`` and one ``sum`` (a NaN or inf entry makes the sum
    non-finite); only then, or for inputs that are not flat arrays, is the exact check run."""
    try:
        if math.isfinite(sum(action.tolist())):
            return
    except (AttributeError, TypeError):
        pass
    a = np.asarray(action, dtype=np.float64)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"action must be finite, got {a.tolist()} (NaN or inf entries); the step was not taken")


def fixed_start_kwargs(fixed_start: bool, base_kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """``base_kwargs`` with ``reset_noise_scale=0`` when ``fixed_start`` (conflicting values are an error)."""
    kw = dict(base_kwargs)
    if fixed_start:
        noise = kw.get("reset_noise_scale", 0.0)
        if noise != 0.0:
            raise ValueError(f"fixed_start=True starts every episode from the initial pose (reset_noise_scale=0), "
                             f"got reset_noise_scale={noise!r}; pass fixed_start=False for random starts")
        kw["reset_noise_scale"] = 0.0
    return kw


def _check_bool(name: str, value: Any) -> bool:
    """``value`` as a bool; anything but ``True``/``False`` (numpy's included) is a ``ValueError`` (not coerced)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def _check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class LocomotionEnv(gym.Env, EzPickle):
    """A gymnasium v5 MuJoCo env turned into a QD task (descriptor, clipped reward, time feature).

    Parameters
    ----------
    base_env:
        a gymnasium MuJoCo env (``MujocoEnv``), owned and closed by this env.
    descriptor:
        ``"feet_contact"`` (needs ``feet``) or ``"final_xy"`` (needs ``desc_bound``).
    episode_length:
        ``T``: the episode is truncated after ``T`` steps.
    feet:
        geom names of the feet, in descriptor order (feet-contact tasks).
    desc_bound:
        half-width of the x-y descriptor box ``[-b, b]^2`` (final-xy tasks).
    omni_reward:
        use ``reward_survive + reward_ctrl + reward_contact`` from ``info`` (forward term removed).
    reward_offset, clip_reward:
        the step reward is ``max(r + reward_offset, 0)`` when ``clip_reward`` (QDax).
    scale_xy_obs:
        divide the observation's first two entries (x, y) by ``desc_bound`` (ant_omni).
    time_feature:
        append ``(T - t) / T`` to the observation.
    fused_step:
        for gymnasium's own v5 HalfCheetah, Hopper, Walker2d and Ant envs, step the physics and compute
        the v5 observation, reward, termination and info in one function (:mod:`gradkit_locomotion.fused`:
        bit-for-bit gymnasium's result, without its per-step Python overhead) instead of calling
        ``base_env.step``; ``False`` always calls ``base_env.step``.  Any other base env, an action that is
        not a float64/float32 array, or a gymnasium whose step code differs from the verified one use
        ``base_env.step``.
    """

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"]}

    def __init__(
        self,
        base_env: gym.Env,
        *,
        descriptor: str,
        episode_length: int,
        feet: Sequence[str] = (),
        desc_bound: Optional[float] = None,
        omni_reward: bool = False,
        reward_offset: float = 0.0,
        clip_reward: bool = True,
        scale_xy_obs: bool = False,
        time_feature: bool = True,
        fused_step: bool = True,
    ):
        if descriptor not in (FEET_CONTACT, FINAL_XY):
            raise ValueError(f"descriptor must be {FEET_CONTACT!r} or {FINAL_XY!r}, got {descriptor!r}")
        # pickling (and copy.deepcopy) rebuilds the env from its arguments, as gymnasium's MuJoCo envs do
        EzPickle.__init__(self, base_env, descriptor=descriptor, episode_length=episode_length, feet=feet,
                          desc_bound=desc_bound, omni_reward=omni_reward, reward_offset=reward_offset,
                          clip_reward=clip_reward, scale_xy_obs=scale_xy_obs, time_feature=time_feature,
                          fused_step=fused_step)
        self.base_env = base_env
        self.descriptor_kind = descriptor
        self.episode_length = _check_positive_int("episode_length", episode_length)
        self.omni_reward = bool(omni_reward)
        self.reward_offset = float(reward_offset)
        self.clip_reward = bool(clip_reward)
        self.time_feature = bool(time_feature)
        self.render_mode = getattr(base_env, "render_mode", None)
        self.metadata = {**type(self).metadata, "render_fps": base_env.metadata["render_fps"]}
        model = base_env.unwrapped.model
        self.model = model
        self.data = base_env.unwrapped.data

        if descriptor == FEET_CONTACT:
            if not feet:
                raise ValueError("a feet_contact descriptor needs the feet geom names")
            self.feet = tuple(feet)
            # resolve names once; the per-step scan works on geom ids only
            import mujoco

            ids = []
            for name in (FLOOR, *self.feet):
                gid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)
                if gid < 0:
                    raise ValueError(f"geom {name!r} not found in the MuJoCo model of {type(base_env).__name__}")
                ids.append(gid)
            self._floor_id = ids[0]
            self.feet_geom_ids = np.asarray(ids[1:], dtype=np.int64)
            self._foot_index = {int(g): k for k, g in enumerate(self.feet_geom_ids)}
            # MuJoCo's contact list object is live (it reads data.ncon and the contact buffer on
            # access), so it is fetched once instead of on every step
            self._contacts = self.data.contact
            low = np.zeros(len(self.feet))
            high = np.ones(len(self.feet))
            self.desc_bound = None
        else:
            if desc_bound is None or not np.isfinite(desc_bound) or desc_bound <= 0:
                raise ValueError(f"a final_xy descriptor needs a positive finite desc_bound, got {desc_bound!r}")
            self.feet = ()
            self.desc_bound = float(desc_bound)
            low = np.full(2, -self.desc_bound)
            high = np.full(2, self.desc_bound)
        self._desc_low, self._desc_high = low, high
        self.scale_xy_obs = bool(scale_xy_obs)
        if self.scale_xy_obs and self.desc_bound is None:
            raise ValueError("scale_xy_obs needs a final_xy descriptor (desc_bound)")

        base_obs = base_env.observation_space
        lo, hi = base_obs.low.astype(np.float64), base_obs.high.astype(np.float64)
        if self.time_feature:
            lo, hi = np.append(lo, 0.0), np.append(hi, 1.0)
        self.observation_space = spaces.Box(lo, hi, dtype=np.float64)
        self.action_space = base_env.action_space

        self._feet_scan = descriptor == FEET_CONTACT
        self._n_base = int(np.prod(base_obs.shape))
        self._obs_size = self._n_base + (1 if self.time_feature else 0)
        self.fused_step = _check_bool("fused_step", fused_step)
        self._act_shape = tuple(self.action_space.shape)
        self._kernel = self._build_kernel()
        self._t = 0
        self._contact_sum = [0.0] * len(self.feet)
        self._xy = np.zeros(2)
        self._done = False

    # ------------------------------------------------------------------ descriptors
    @property
    def descriptor_bounds(self) -> Tuple[np.ndarray, np.ndarray]:
        """``(low, high)`` of the descriptor box (copies)."""
        return self._desc_low.copy(), self._desc_high.copy()

    @property
    def descriptor_dim(self) -> int:
        return int(self._desc_low.shape[0])

    def feet_in_contact(self) -> np.ndarray:
        """Binary (n_feet,) indicator: is there a (foot, floor) pair among the current contacts?"""
        out = np.zeros(len(self.feet))
        for k in self._feet_touching():
            out[k] = 1.0
        return out

    def _feet_touching(self):
        """Indices of the feet touching the floor (a plain loop: ``ncon`` is small, numpy calls cost more)."""
        if self.data.ncon == 0:
            return ()
        floor, foot_of = self._floor_id, self._foot_index
        touching = set()
        for g1, g2 in self._contacts.geom.tolist():
            if g1 == floor:
                touching.add(foot_of.get(g2))
            elif g2 == floor:
                touching.add(foot_of.get(g1))
        touching.discard(None)
        return touching

    def _xy_descriptor(self) -> np.ndarray:
        q, b = self.data.qpos, self.desc_bound
        return np.array((min(max(float(q[0]), -b), b), min(max(float(q[1]), -b), b)))

    def current_descriptor(self) -> np.ndarray:
        """The running descriptor: contact fractions so far, or the current clipped x-y."""
        if self.descriptor_kind == FEET_CONTACT:
            return np.array(self._contact_sum) / max(self._t, 1)
        return self._xy.copy()

    # ------------------------------------------------------------------ gymnasium API
    def _obs(self, base_obs: np.ndarray) -> np.ndarray:
        n = base_obs.shape[0]
        obs = np.empty(n + 1 if self.time_feature else n)
        obs[:n] = base_obs
        if self.scale_xy_obs:
            obs[:2] /= self.desc_bound
        if self.time_feature:
            obs[n] = (self.episode_length - self._t) / self.episode_length
        return obs

    def _build_kernel(self):
        if not self.fused_step:
            return None
        from .fused import fused_kernel

        return fused_kernel(self.base_env, self._obs_size)

    @property
    def uses_fused_step(self) -> bool:
        """Whether float64/float32 actions are stepped by the fused v5 step (:mod:`gradkit_locomotion.fused`)."""
        return self._kernel is not None

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict] = None):
        super().reset(seed=seed)
        base_obs, info = self.base_env.reset(seed=seed, options=options)
        self._kernel = self._build_kernel()  # reads the base env's settings once per episode
        self._t = 0
        self._contact_sum = [0.0] * len(self.feet)
        self._xy = self._xy_descriptor() if self.descriptor_kind == FINAL_XY else self._xy
        self._done = False
        info = dict(info)
        info["descriptor"] = self.current_descriptor()
        info["valid_steps"] = 0
        return self._obs(base_obs), info

    def step(self, action):
        # Kept lean on purpose: the goal is at most 5% over the raw v5 env's step time (bench.py), so every
        # attribute lookup and numpy call counts.  A float64/float32 action of the right shape on gymnasium's own
        # v5 robots takes the fused step (fused.py: gymnasium's arithmetic, bit for bit, in one function);
        # its finiteness check comes free with the control cost's sum of squares (a NaN or inf entry makes
        # it non-finite; only then is the exact check run).  Anything else goes through base_env.step.
        # Measured choices: the descriptor is filled entry by entry into np.empty (np.array of a few
        # floats or a ufunc on a stored array costs 2-3x more), the contact list is read only when ncon > 0,
        # and one foot touching with several contacts counts once (bit mask).
        kernel = self._kernel
        if kernel is not None and type(action) is np.ndarray and action.shape == self._act_shape and (
                action.dtype == _F64 or action.dtype == _F32):
            # the control cost's sum of squares, as gymnasium computes it (float32 actions: in float32)
            sq = sum_squares(action.tolist()) if action.dtype == _F64 else np.sum(np.square(action))
            if not math.isfinite(sq):
                check_finite_action(action)  # raises unless the sum merely overflowed
            obs, reward, terminated, info = kernel(action, sq)
            truncated = False
        else:
            try:
                if not math.isfinite(sum(action.tolist())):
                    check_finite_action(action)
            except (AttributeError, TypeError):
                check_finite_action(action)
            base_obs, reward, terminated, truncated, info = self.base_env.step(action)
            if self.time_feature:
                obs = np.empty(self._obs_size)
                obs[:self._n_base] = base_obs
            else:
                obs = np.array(base_obs, dtype=np.float64)  # a copy in the base env's own shape
        t = self._t = self._t + 1
        if self.omni_reward:
            reward = info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"]
        reward = float(reward) + self.reward_offset
        if reward < 0.0 and self.clip_reward:
            reward = 0.0
        if self._feet_scan:
            sums = self._contact_sum
            data = self.data
            if data.ncon:
                floor, foot_of, seen = self._floor_id, self._foot_index, 0
                for g1, g2 in self._contacts.geom.tolist():
                    if g1 == floor:
                        k = foot_of.get(g2, -1)
                    elif g2 == floor:
                        k = foot_of.get(g1, -1)
                    else:
                        continue
                    if k >= 0 and not (seen >> k) & 1:
                        seen |= 1 << k
                        sums[k] += 1.0
            desc = np.empty(len(sums))  # faster than np.array(...) of a few floats
            for k, c in enumerate(sums):
                desc[k] = c / t
        else:
            self._xy = desc = self._xy_descriptor()
        info["descriptor"] = desc
        info["valid_steps"] = t
        if t >= self.episode_length:
            truncated = True
        if terminated or truncated:
            info["final_descriptor"] = desc.copy()
        if self.time_feature:
            obs[-1] = (self.episode_length - t) / self.episode_length
        if self.scale_xy_obs:
            obs[:2] /= self.desc_bound
        return obs, reward, bool(terminated), bool(truncated), info

    def render(self):
        return self.base_env.render()

    def close(self):
        self.base_env.close()
        super().close()


# ---------------------------------------------------------------------- the registered tasks
def _ant(**kw):
    from gymnasium.envs.mujoco.ant_v5 import AntEnv

    return AntEnv(include_cfrc_ext_in_observation=False, **kw)


def ant_trap_xml() -> str:
    """Path of the AntTrap model: gymnasium's ant.xml plus QDax's three trap walls at x = 8.5."""
    return str(resources.files("gradkit_locomotion") / "assets" / "ant_trap.xml")


class AntOmni(LocomotionEnv):
    """ant_omni: Ant-v5, descriptor = final torso (x, y) in ``[-b, b]^2``, reward without the forward term.

    Step reward ``max(survive + ctrl + contact + 3.03, 0)``; the observation keeps x, y divided by ``b``.
    """

    def __init__(self, episode_length: int = 250, desc_bound: float = 30.0, render_mode=None,
                 fixed_start: bool = True, fused_step: bool = True, **ant_kwargs):
        self.fixed_start = _check_bool("fixed_start", fixed_start)  # checked before the base env is built
        base = _ant(
            exclude_current_positions_from_observation=False,
            forward_reward_weight=0.0,
            render_mode=render_mode,
            **self._extra_ant_kwargs(),
            **fixed_start_kwargs(fixed_start, ant_kwargs),
        )
        super().__init__(
            base,
            descriptor=FINAL_XY,
            episode_length=episode_length,
            desc_bound=desc_bound,
            omni_reward=True,
            reward_offset=OMNI_REWARD_OFFSET,
            scale_xy_obs=True,
            fused_step=fused_step,
        )
        EzPickle.__init__(self, episode_length=episode_length, desc_bound=desc_bound, render_mode=render_mode,
                          fixed_start=fixed_start, fused_step=fused_step, **ant_kwargs)

    def _extra_ant_kwargs(self) -> Dict[str, Any]:
        return {}


class AntTrapOmni(AntOmni):
    """anttrap_omni: :class:`AntOmni` with a U-shaped trap (three walls) in front of the start."""

    def _extra_ant_kwargs(self) -> Dict[str, Any]:
        return {"xml_file": ant_trap_xml()}


class _UniTask(LocomotionEnv):
    _robot = ""

    def __init__(self, episode_length: int = 1000, render_mode=None, fixed_start: bool = True,
                 fused_step: bool = True, **base_kwargs):
        self.fixed_start = _check_bool("fixed_start", fixed_start)
        super().__init__(
            self._make_base(render_mode=render_mode, **fixed_start_kwargs(fixed_start, base_kwargs)),
            descriptor=FEET_CONTACT,
            episode_length=episode_length,
            feet=FEET[self._robot],
            fused_step=fused_step,
        )
        EzPickle.__init__(self, episode_length=episode_length, render_mode=render_mode, fixed_start=fixed_start,
                          fused_step=fused_step, **base_kwargs)


class HalfCheetahUni(_UniTask):
    """halfcheetah_uni: HalfCheetah-v5, descriptor = contact fractions of (back foot, front foot)."""

    _robot = "HalfCheetah"

    @staticmethod
    def _make_base(**kw):
        from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

        return HalfCheetahEnv(**kw)


class Walker2dUni(_UniTask):
    """walker2d_uni: Walker2d-v5, descriptor = contact fractions of (right foot, left foot)."""

    _robot = "Walker2d"

    @staticmethod
    def _make_base(**kw):
        from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

        return Walker2dEnv(**kw)


class HopperUni(_UniTask):
    """hopper_uni: Hopper-v5, descriptor = contact fraction of the foot."""

    _robot = "Hopper"

    @staticmethod
    def _make_base(**kw):
        from gymnasium.envs.mujoco.hopper_v5 import HopperEnv

        return HopperEnv(**kw)


class AntUni(_UniTask):
    """ant_uni: Ant-v5 (x, y excluded from the observation), descriptor = contact fractions of the 4 feet."""

    _robot = "Ant"

    @staticmethod
    def _make_base(**kw):
        return _ant(**kw)
