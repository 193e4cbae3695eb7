"""Fused steps: gymnasium v5's MuJoCo step for HalfCheetah, Hopper, Walker2d and Ant, written once more
without its per-step Python overhead, for the QD tasks to call instead of ``base_env.step``.

Why: a QD task's step is the robot's v5 step plus the QD layer (finiteness check, clipped reward,
contact scan, running descriptor, time feature).  On HalfCheetah the v5 step costs ~37 us of CPU, of
which ~9 us is gymnasium's Python around ``mj_step`` (flatten copies, ``np.concatenate``, the
``np.array(ctrl).shape`` check, ``np.sum(np.square(.))``, ``data.body(...)`` lookups), so the layer's
own ~4 us could not fit in 5 % of it.  A fused step does the same arithmetic in one function and
leaves room for the layer.

Contract (tested in ``tests/test_fused_step.py``): for the same state and action, a fused step gives
exactly gymnasium's result -- the observation, reward, ``terminated`` and every ``info`` entry are
bit-for-bit equal, and the MuJoCo state afterwards (``qpos``, ``qvel``, ``act``, ``time``,
``cfrc_ext``, contacts) is the same, over random trajectories through terminations.  Reductions are
done in numpy's summation order (``sum_squares``), so even the control cost agrees to the last bit.

When a fused step is used (``fused_kernel`` returns ``None`` otherwise and the task calls
``base_env.step``):

* the base env is an instance of exactly gymnasium's v5 class (a subclass may change the step);
* the installed gymnasium's source of every function the kernel re-implements has the fingerprint of
  the verified gymnasium version (``VERIFIED``); any change there turns the fused step off;
* the action is a float64 or float32 numpy array of the action shape (lists and other dtypes take
  gymnasium's own step).  For float64 the caller passes ``sum_squares(action.tolist())``; for float32
  ``np.sum(np.square(action))`` (a float32, as in gymnasium's control cost).

The base env's settings (reward weights, ranges, ``frame_skip``, ``dt``, render mode) are read when
the kernel is built, i.e. at every ``reset``; change them between episodes, not within one.
"""

from __future__ import annotations

import hashlib
import inspect
import math
import textwrap
from typing import Callable, Dict, Optional, Tuple

import numpy as np

#: sha256 (first 16 hex digits) of the source of the functions each kernel mirrors, as in gymnasium 1.4.0
VERIFIED: Dict[str, str] = {
    "HalfCheetahEnv": "59937941e3e82f26",
    "HopperEnv": "7f27fc352f13479f",
    "Walker2dEnv": "731ded8d866d4527",
    "AntEnv": "b451488efb3e984b",
}

_COMMON = ("do_simulation", "_step_mujoco_simulation", "state_vector", "dt")
_MIRRORED = {
    "HalfCheetahEnv": _COMMON + ("step", "_get_obs", "_get_rew", "control_cost"),
    "HopperEnv": _COMMON + ("step", "_get_obs", "_get_rew", "control_cost", "is_healthy", "healthy_reward"),
    "Walker2dEnv": _COMMON + ("step", "_get_obs", "_get_rew", "control_cost", "is_healthy", "healthy_reward"),
    "AntEnv": _COMMON + ("step", "_get_obs", "_get_rew", "control_cost", "is_healthy", "healthy_reward",
                         "contact_forces", "contact_cost"),
}
_fingerprints: Dict[type, Optional[str]] = {}


def fingerprint(cls: type) -> Optional[str]:
    """Digest of the source of the functions of ``cls`` a fused step mirrors (``None``: source unavailable)."""
    if cls in _fingerprints:
        return _fingerprints[cls]
    names = _MIRRORED.get(cls.__name__)
    digest = None
    if names is not None:
        h = hashlib.sha256()
        try:
            for name in names:
                obj = next(vars(k)[name] for k in cls.__mro__ if name in vars(k))  # the definition in use
                if isinstance(obj, property):
                    obj = obj.fget
                h.update(name.encode())
                h.update(textwrap.dedent(inspect.getsource(obj)).encode())
            digest = h.hexdigest()[:16]
        except (OSError, TypeError, StopIteration):
            digest = None
    _fingerprints[cls] = digest
    return digest


def sum_squares(vals) -> float:
    """``np.sum(np.square(a))`` of a float64 array ``a`` given as ``a.tolist()``, in numpy's summation order.

    numpy sums fewer than 8 values left to right and up to 128 values in 8 interleaved partial sums
    combined pairwise (its ``pairwise_sum``); doing the same gives the same bits.  Longer inputs are
    summed by numpy itself."""
    n = len(vals)
    if n < 8:
        s = 0.0
        for x in vals:
            s += x * x
        return s
    if n > 128:
        return float(np.sum(np.square(np.asarray(vals, dtype=np.float64))))
    r = [x * x for x in vals[:8]]
    m = n - n % 8
    for i in range(8, m, 8):
        for j in range(8):
            x = vals[i + j]
            r[j] += x * x
    s = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
    for x in vals[m:]:
        s += x * x
    return s


Kernel = Callable[[np.ndarray, float], Tuple[np.ndarray, float, bool, dict]]


def fused_kernel(base, obs_size: int) -> Optional[Kernel]:
    """A fused step for ``base`` (see the module docstring), or ``None`` where gymnasium's step must be used.

    The kernel takes ``(action, sq)`` -- an action of the right shape and its sum of squares, computed as
    gymnasium computes it (module docstring) --
    and returns ``(obs, reward, terminated, info)`` as gymnasium's step would, except that ``obs`` has
    ``obs_size`` entries, the base observation first (the rest is for the caller to fill)."""
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    builders = {HalfCheetahEnv: _half_cheetah, HopperEnv: _hopper_walker, Walker2dEnv: _hopper_walker,
                AntEnv: _ant}
    cls = type(base)
    build = builders.get(cls)
    if build is None or fingerprint(cls) != VERIFIED.get(cls.__name__):
        return None
    try:
        return build(base, obs_size)
    except (AttributeError, TypeError, ValueError):  # settings this gymnasium does not have: use its step
        return None


def _physics(base):
    import mujoco

    return base.model, base.data, int(base.frame_skip), float(base.dt), mujoco.mj_step, mujoco.mj_rnePostConstraint


def _half_cheetah(base, obs_size: int) -> Kernel:
    model, data, frame_skip, dt, mj_step, mj_rne = _physics(base)
    qpos, qvel, ctrl = data.qpos, data.qvel, data.ctrl
    fw, cw = float(base._forward_reward_weight), float(base._ctrl_cost_weight)
    skip = 1 if base._exclude_current_positions_from_observation else 0
    k = qpos.shape[0] - skip
    n = k + qvel.shape[0]
    render = base.render if base.render_mode == "human" else None
    empty = np.empty

    def kernel(action, sq):
        x0 = qpos[0]
        ctrl[:] = action
        mj_step(model, data, frame_skip)
        mj_rne(model, data)
        x1 = qpos[0]
        xv = (x1 - x0) / dt
        obs = empty(obs_size)
        obs[:k] = qpos[skip:]
        obs[k:n] = qvel
        forward = fw * xv
        cost = cw * sq
        info = {"x_position": x1, "x_velocity": xv, "reward_forward": forward, "reward_ctrl": -cost}
        if render is not None:
            render()
        return obs, forward - cost, False, info

    return kernel


def _hopper_walker(base, obs_size: int) -> Kernel:
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv

    model, data, frame_skip, dt, mj_step, mj_rne = _physics(base)
    qpos, qvel, ctrl = data.qpos, data.qvel, data.ctrl
    fw, cw, hr = float(base._forward_reward_weight), float(base._ctrl_cost_weight), float(base._healthy_reward)
    terminate = bool(base._terminate_when_unhealthy)
    zlo, zhi = base._healthy_z_range
    alo, ahi = base._healthy_angle_range
    # Hopper also needs qpos[2:] and qvel strictly inside healthy_state_range (Walker2d does not)
    slo, shi = base._healthy_state_range if type(base) is HopperEnv else (None, None)
    z0 = base.init_qpos[1]
    skip = 1 if base._exclude_current_positions_from_observation else 0
    k = qpos.shape[0] - skip
    n = k + qvel.shape[0]
    render = base.render if base.render_mode == "human" else None
    empty, array = np.empty, np.array

    def kernel(action, sq):
        x0 = qpos[0]
        ctrl[:] = action
        mj_step(model, data, frame_skip)
        mj_rne(model, data)
        q = qpos.tolist()
        v = qvel.tolist()
        x1 = qpos[0]
        xv = (x1 - x0) / dt
        z, angle = q[1], q[2]
        healthy = zlo < z < zhi and alo < angle < ahi
        if healthy and slo is not None:
            state = q[2:] + v
            s = sum(state)  # NaN iff some entry is NaN (or both infinities: then a bound fails anyway)
            healthy = s == s and slo < min(state) and max(state) < shi
        obs = empty(obs_size)
        obs[:k] = qpos[skip:]
        # np.clip(qvel, -10, 10) entry by entry (a NaN stays NaN, as with np.clip)
        obs[k:n] = array([-10.0 if x < -10.0 else (10.0 if x > 10.0 else x) for x in v])
        forward = fw * xv
        healthy_reward = healthy * hr
        cost = cw * sq
        info = {"x_position": x1, "z_distance_from_origin": qpos[1] - z0, "x_velocity": xv,
                "reward_forward": forward, "reward_ctrl": -cost, "reward_survive": healthy_reward}
        if render is not None:
            render()
        return obs, forward + healthy_reward - cost, (not healthy) and terminate, info

    return kernel


def _ant(base, obs_size: int) -> Kernel:
    import mujoco

    model, data, frame_skip, dt, mj_step, mj_rne = _physics(base)
    qpos, qvel, ctrl, xpos, cfrc_ext = data.qpos, data.qvel, data.ctrl, data.xpos, data.cfrc_ext
    main = base._main_body
    if isinstance(main, str):
        body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, main)
        if body < 0:
            raise ValueError(f"main_body {main!r} not found")
    else:
        body = int(main)
    fw, cw = float(base._forward_reward_weight), float(base._ctrl_cost_weight)
    ccw, hr = float(base._contact_cost_weight), float(base._healthy_reward)
    terminate = bool(base._terminate_when_unhealthy)
    zlo, zhi = base._healthy_z_range
    flo, fhi = base._contact_force_range
    skip = 2 if base._exclude_current_positions_from_observation else 0
    include_cfrc = bool(base._include_cfrc_ext_in_observation)
    k = qpos.shape[0] - skip
    n = k + qvel.shape[0]
    render = base.render if base.render_mode == "human" else None
    empty, clip, square, isfinite = np.empty, np.clip, np.square, math.isfinite
    sqrt = math.sqrt

    def kernel(action, sq):
        x0, y0 = xpos[body, 0], xpos[body, 1]
        ctrl[:] = action
        mj_step(model, data, frame_skip)
        mj_rne(model, data)
        xv = (xpos[body, 0] - x0) / dt
        yv = (xpos[body, 1] - y0) / dt
        q = qpos.tolist()
        s = sum(q) + sum(qvel.tolist())
        finite = isfinite(s) or bool(np.isfinite(qpos).all() and np.isfinite(qvel).all())  # exact when the sum overflows
        healthy = finite and zlo <= q[2] <= zhi
        forces = clip(cfrc_ext, flo, fhi)
        contact_cost = ccw * square(forces).sum()
        healthy_reward = healthy * hr
        forward = xv * fw
        cost = cw * sq
        obs = empty(obs_size)
        obs[:k] = qpos[skip:]
        obs[k:n] = qvel
        if include_cfrc:
            obs[n:n + forces[1:].size] = forces[1:].ravel()
        xy = qpos[0:2]
        info = {"x_position": qpos[0], "y_position": qpos[1], "distance_from_origin": sqrt(xy.dot(xy)),
                "x_velocity": xv, "y_velocity": yv, "reward_forward": forward, "reward_ctrl": -cost,
                "reward_contact": -contact_cost, "reward_survive": healthy_reward}
        if render is not None:
            render()
        return obs, (forward + healthy_reward) - (cost + contact_cost), (not healthy) and terminate, info

    return kernel
