"""The fused v5 step (gradkit_locomotion.fused) gives gymnasium's step bit for bit, and is used only where it may be."""

import math

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

import gradkit_locomotion  # noqa: F401  (registers the ids)
from gradkit_locomotion import fused
from gradkit_locomotion.fused import fused_kernel, sum_squares
from gradkit_locomotion.tasks import ant_trap_xml

# The fused step is on only for the gymnasium whose v5 source was verified (fused.VERIFIED); with another
# gymnasium the tasks fall back to its own step (correct, slower) and the tests that need the fused step say so.
VERIFIED_HERE = all(fused.fingerprint(c) == fused.VERIFIED[c.__name__]
                    for c in (HalfCheetahEnv, HopperEnv, Walker2dEnv, AntEnv))
needs_verified = pytest.mark.skipif(
    not VERIFIED_HERE, reason=f"gymnasium {gym.__version__}'s v5 step code differs from the verified 1.4.0: the fused "
                              "step is off here; compare it with this gymnasium and update fused.VERIFIED")

# base-env settings: the tasks' own plus every option a kernel reads, set away from its default
CASES = {
    "cheetah": (HalfCheetahEnv, {}),
    "cheetah-options": (HalfCheetahEnv, dict(forward_reward_weight=0.7, ctrl_cost_weight=0.3, frame_skip=3,
                                             exclude_current_positions_from_observation=False)),
    "hopper": (HopperEnv, {}),
    "hopper-options": (HopperEnv, dict(healthy_reward=0.5, terminate_when_unhealthy=False, healthy_z_range=(0.9, 1.6),
                                       healthy_angle_range=(-0.1, 0.1), healthy_state_range=(-5.0, 8.0),
                                       exclude_current_positions_from_observation=False)),
    "walker": (Walker2dEnv, {}),
    "walker-options": (Walker2dEnv, dict(healthy_reward=2.0, healthy_z_range=(1.0, 1.8), terminate_when_unhealthy=False,
                                         ctrl_cost_weight=0.01)),
    "ant-uni": (AntEnv, dict(include_cfrc_ext_in_observation=False)),
    "ant-omni": (AntEnv, dict(include_cfrc_ext_in_observation=False, exclude_current_positions_from_observation=False,
                              forward_reward_weight=0.0)),
    "ant-trap": (AntEnv, dict(include_cfrc_ext_in_observation=False, exclude_current_positions_from_observation=False,
                              xml_file=ant_trap_xml())),
    "ant-default-options": (AntEnv, dict(main_body="torso", contact_force_range=(-0.5, 0.8), contact_cost_weight=1e-2,
                                         healthy_z_range=(0.3, 0.9))),
}


def _state(data):
    return {k: np.array(getattr(data, k)) for k in ("qpos", "qvel", "act", "ctrl", "qacc", "xpos", "cfrc_ext", "cacc")} | {
        "time": data.time, "ncon": data.ncon, "contacts": np.array(data.contact.geom)}


def _same(a, b):
    """Bit-for-bit equality of two step results (NaN equals NaN)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _same(x, y)
    elif isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype
    else:
        assert (a == b) or (a != a and b != b), (a, b)


@needs_verified
@pytest.mark.parametrize("case", sorted(CASES))
def test_fused_kernel_gives_gymnasiums_step_bit_for_bit(case):
    cls, kw = CASES[case]
    ref, env = cls(**kw), cls(**kw)
    n = env.observation_space.shape[0]
    kernel = fused_kernel(env, n)
    assert kernel is not None
    rng = np.random.default_rng(0)
    terminations = 0
    for episode in range(4):
        ref.reset(seed=episode)
        env.reset(seed=episode)
        kernel = fused_kernel(env, n)
        for t in range(150):
            # mostly ordinary actions; now and then large ones that throw the robot over (terminations,
            # clipped velocities, contact forces beyond the clip range)
            scale = 1.0 if rng.random() < 0.8 else 30.0
            a = rng.uniform(-scale, scale, size=env.action_space.shape)
            if t % 3 == 2:  # float32 actions: the control cost is float32 arithmetic in gymnasium too
                a = a.astype(np.float32)
                sq = np.sum(np.square(a))
            else:
                sq = sum_squares(a.tolist())
            o1, r1, te1, tr1, i1 = ref.step(a.copy())
            o2, r2, te2, i2 = kernel(a.copy(), sq)
            _same(o1, o2)
            assert r1 == r2
            assert te1 == te2 and tr1 is False
            _same(i1, i2)
            _same(_state(ref.data), _state(env.data))
            if te1:
                terminations += 1
                break
    if kw.get("terminate_when_unhealthy", True) and cls is not HalfCheetahEnv:
        assert terminations > 0  # the comparison went through the unhealthy branch


TASKS = ["gradkit/HalfCheetahUni-v0", "gradkit/HopperUni-v0", "gradkit/Walker2dUni-v0", "gradkit/AntUni-v0",
         "gradkit/AntOmni-v0", "gradkit/AntTrapOmni-v0"]


@needs_verified
@pytest.mark.parametrize("env_id", TASKS)
@pytest.mark.parametrize("fixed_start", [True, False])
def test_task_with_fused_step_equals_task_on_gymnasiums_step(env_id, fixed_start):
    fast = gym.make(env_id, episode_length=60, fixed_start=fixed_start).unwrapped
    slow = gym.make(env_id, episode_length=60, fixed_start=fixed_start, fused_step=False).unwrapped
    assert fast.uses_fused_step and not slow.uses_fused_step
    rng = np.random.default_rng(1)
    for episode in range(3):
        _same(fast.reset(seed=episode), slow.reset(seed=episode))
        for t in range(60):
            a = rng.uniform(-1.5, 1.5, size=fast.action_space.shape)
            if t % 2:
                a = a.astype(np.float32)
            out_fast, out_slow = fast.step(a), slow.step(a)
            for x, y in zip(out_fast, out_slow):
                _same(x, y)
            if out_fast[2] or out_fast[3]:
                break
        assert "final_descriptor" in out_fast[4]


def test_sum_squares_is_numpys_sum_of_squares_bit_for_bit():
    rng = np.random.default_rng(2)
    for n in list(range(0, 41)) + [127, 128, 129, 300]:
        for _ in range(300):
            a = rng.normal(size=n) * 10.0 ** rng.uniform(-4, 4, size=n)
            assert sum_squares(a.tolist()) == np.sum(np.square(a)), n
    # n = 8 is where numpy stops summing left to right: the orders differ on these values
    a = [2.0 ** 27, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0]  # left to right each 1 is rounded away
    left_to_right = 0.0
    for x in a:
        left_to_right += x * x
    assert sum_squares(a) == np.sum(np.square(np.array(a))) != left_to_right


@needs_verified
def test_other_actions_and_envs_take_gymnasiums_step():
    env = gym.make("gradkit/HalfCheetahUni-v0").unwrapped
    assert env.uses_fused_step
    env.reset(seed=0)
    calls = []
    step = env.base_env.step
    env.base_env.step = lambda a: calls.append(a) or step(a)
    env.step(np.zeros(6))
    env.step(np.zeros(6, dtype=np.float32))
    assert calls == []  # float64 and float32: fused
    env.step([0.0] * 6)
    env.step(np.zeros(6, dtype=np.float16))
    assert len(calls) == 2  # a list and another dtype: gymnasium's step
    with pytest.raises(ValueError, match="Action dimension mismatch"):
        env.step(np.zeros(5))  # a wrong shape reaches gymnasium's own check


def test_subclass_or_changed_gymnasium_code_turns_the_fused_step_off(monkeypatch):
    class MyCheetah(HalfCheetahEnv):
        def step(self, action):
            return super().step(action)

    assert fused_kernel(MyCheetah(), 17) is None
    if VERIFIED_HERE:
        assert fused_kernel(HalfCheetahEnv(), 17) is not None
    # a gymnasium whose mirrored functions differ from the verified source: the fingerprint no longer matches
    monkeypatch.setitem(fused._fingerprints, HalfCheetahEnv, "0" * 16)
    assert fused_kernel(HalfCheetahEnv(), 17) is None
    env = gym.make("gradkit/HalfCheetahUni-v0").unwrapped
    assert not env.uses_fused_step


def test_fingerprint_follows_the_source(monkeypatch):
    fp = fused.fingerprint(HopperEnv)
    assert fp is not None and len(fp) == 16
    # a changed healthy check in the installed gymnasium changes the digest
    monkeypatch.delitem(fused._fingerprints, HopperEnv)
    monkeypatch.setattr(HopperEnv, "is_healthy", property(lambda self: True))
    assert fused.fingerprint(HopperEnv) != fp


@needs_verified
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_action_is_refused_on_the_fused_path_with_state_unchanged(bad, dtype):
    env = gym.make("gradkit/AntUni-v0").unwrapped
    assert env.uses_fused_step
    env.reset(seed=0)
    env.step(np.full(8, 0.3))
    before = _state(env.data)
    a = np.full(8, 0.1, dtype=dtype)
    a[5] = bad
    with pytest.raises(ValueError, match="finite"):
        env.step(a)
    _same(before, _state(env.data))
    assert env._t == 1


def test_overflowing_but_finite_action_is_stepped_like_gymnasium():
    # the sum of squares overflows to inf although every entry is finite: not refused, same as gymnasium
    fast = gym.make("gradkit/HopperUni-v0").unwrapped
    slow = gym.make("gradkit/HopperUni-v0", fused_step=False).unwrapped
    fast.reset(seed=0)
    slow.reset(seed=0)
    a = np.array([1e200, 0.0, 0.0])
    for x, y in zip(fast.step(a), slow.step(a)):
        _same(x, y)


def test_settings_changed_between_episodes_are_used():
    fast = gym.make("gradkit/HalfCheetahUni-v0").unwrapped
    slow = gym.make("gradkit/HalfCheetahUni-v0", fused_step=False).unwrapped
    for env in (fast, slow):
        env.base_env._ctrl_cost_weight = 0.5
        env.reset(seed=0)
    a = np.full(6, 0.9)
    assert fast.step(a)[4]["reward_ctrl"] == slow.step(a)[4]["reward_ctrl"] == pytest.approx(-0.5 * 6 * 0.81)
