"""The task definitions: dynamics, rewards, time feature, descriptors on scripted rollouts."""

import os
import subprocess
import sys

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import gradkit_locomotion
from gradkit_locomotion.point import DT, PointOmniEnv, PointOmniVectorEnv
from gradkit_locomotion.tasks import FEET, FLOOR, AntOmni


def make(env_id, **kw):
    return gym.make(env_id, **kw).unwrapped


# ---------------------------------------------------------------------- import cost
def _run(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()


def test_import_is_light_and_registers_ids_when_gymnasium_loads():
    out = _run(
        "import sys, gradkit_locomotion\n"
        "print(sorted(m for m in ('gymnasium', 'numpy', 'mujoco', 'torch') if m in sys.modules) or 'none')\n"
        "import gymnasium\n"
        "print('gradkit/AntOmni-v0' in gymnasium.registry, 'mujoco' in sys.modules)\n"
    )
    assert out == ["none", "True", "False"]


def test_import_after_gymnasium_registers_at_once():
    out = _run(
        "import gymnasium, gradkit_locomotion\n"
        "print(all(i in gymnasium.registry for i in gradkit_locomotion.TASKS))\n"
        "print(gymnasium.make('gradkit/PointOmni-v0').unwrapped.__class__.__name__)\n"
    )
    assert out == ["True", "PointOmniEnv"]


# ---------------------------------------------------------------------- PointOmni
def test_point_step_by_hand():
    env = PointOmniEnv()
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0, 0, 0, 0, 1.0])
    obs, r, term, trunc, info = env.step(np.array([1.0, -0.5]))
    v = np.array([DT * 1.0, DT * -0.5])
    np.testing.assert_allclose(obs[:4], [*(DT * v), *v])
    assert obs[4] == pytest.approx(49 / 50)
    assert r == pytest.approx(1 - 0.5 * (1 + 0.25))
    assert not term and not trunc
    # actions are clipped to [-1, 1] before the dynamics and the energy term
    env.reset()
    _, r, *_ = env.step(np.array([5.0, 0.0]))
    assert r == pytest.approx(0.5)


def test_point_wall_clips_position_and_stops_velocity():
    env = PointOmniEnv()
    env.reset(seed=0)
    rewards = []
    for t in range(50):
        obs, r, term, trunc, info = env.step(np.array([1.0, 0.0]))
        rewards.append(r)
    assert trunc and not term and obs[4] == 0.0
    assert obs[0] == 1.0 and obs[2] == 0.0  # at the wall, x-velocity zeroed
    np.testing.assert_array_equal(info["final_descriptor"], obs[:2])
    assert min(rewards) >= 0.0  # fitness is non-negative


def test_point_vector_env_matches_single_envs_and_autoresets():
    n = 3
    venv = gym.make_vec("gradkit/PointOmni-v0", num_envs=n, vectorization_mode="vector_entry_point")
    assert isinstance(venv.unwrapped, PointOmniVectorEnv)
    singles = [PointOmniEnv() for _ in range(n)]
    obs, _ = venv.reset(seed=0)
    for s in singles:
        s.reset(seed=0)
    rng = np.random.default_rng(0)
    for t in range(50):
        a = rng.uniform(-1, 1, size=(n, 2))
        obs, r, term, trunc, info = venv.step(a)
        outs = [s.step(a[i]) for i, s in enumerate(singles)]
        np.testing.assert_allclose(obs, np.stack([o[0] for o in outs]))
        np.testing.assert_allclose(r, [o[1] for o in outs])
    assert trunc.all() and "final_descriptor" in info
    obs, r, term, trunc, info = venv.step(np.ones((n, 2)))  # next-step autoreset ignores the action
    np.testing.assert_array_equal(obs[:, :4], 0.0)
    np.testing.assert_array_equal(obs[:, 4], 1.0)


# ---------------------------------------------------------------------- time feature, rewards
def test_time_feature_counts_down_and_episode_truncates_at_T():
    env = make("gradkit/HalfCheetahUni-v0", episode_length=5)
    obs, _ = env.reset(seed=0)
    feats = [obs[-1]]
    for t in range(5):
        obs, r, term, trunc, info = env.step(np.zeros(6))
        feats.append(obs[-1])
        assert trunc == (t == 4)
    np.testing.assert_allclose(feats, [1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    assert "final_descriptor" in info and info["valid_steps"] == 5


def test_uni_reward_is_clipped_base_reward():
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

    task = make("gradkit/HalfCheetahUni-v0", episode_length=60)
    raw = HalfCheetahEnv(reset_noise_scale=0.0)  # the task's default fixed start
    o1, _ = task.reset(seed=3)
    o2, _ = raw.reset(seed=3)
    np.testing.assert_array_equal(o1[:-1], o2)
    rng = np.random.default_rng(0)
    clipped = 0
    for _ in range(60):
        a = rng.uniform(-1, 1, 6)
        _, r1, *_ = task.step(a)
        _, r2, *_ = raw.step(a)
        assert r1 == pytest.approx(max(r2, 0.0))
        clipped += r2 < 0
    assert clipped > 0  # the clip was exercised


def test_omni_reward_drops_forward_term_and_adds_offset():
    env = make("gradkit/AntOmni-v0", episode_length=40)
    env.reset(seed=0)
    rng = np.random.default_rng(1)
    for _ in range(40):
        obs, r, term, trunc, info = env.step(rng.uniform(-1, 1, 8))
        assert info["reward_forward"] == 0.0
        expected = max(info["reward_survive"] + info["reward_ctrl"] + info["reward_contact"] + 3.03, 0.0)
        assert r == pytest.approx(expected) and r >= 0.0
        # x, y stay in the observation, divided by the descriptor bound
        np.testing.assert_allclose(obs[:2], env.data.qpos[:2] / 30.0)
        if term or trunc:
            break


@pytest.mark.parametrize(
    "env_id,low,high",
    [
        ("gradkit/PointOmni-v0", [-1, -1], [1, 1]),
        ("gradkit/AntOmni-v0", [-30, -30], [30, 30]),
        ("gradkit/AntTrapOmni-v0", [-30, -30], [30, 30]),
        ("gradkit/HalfCheetahUni-v0", [0, 0], [1, 1]),
        ("gradkit/Walker2dUni-v0", [0, 0], [1, 1]),
        ("gradkit/HopperUni-v0", [0], [1]),
        ("gradkit/AntUni-v0", [0, 0, 0, 0], [1, 1, 1, 1]),
    ],
)
def test_descriptor_bounds(env_id, low, high):
    env = make(env_id)
    lo, hi = env.descriptor_bounds
    np.testing.assert_array_equal(lo, low)
    np.testing.assert_array_equal(hi, high)
    assert env.descriptor_dim == len(low)


def test_short_box_for_short_episodes():
    env = make("gradkit/AntOmni-v0", episode_length=100, desc_bound=5.0)
    lo, hi = env.descriptor_bounds
    np.testing.assert_array_equal(hi, [5, 5])
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[:2], env.data.qpos[:2] / 5.0)


# ---------------------------------------------------------------------- feet contact
def _contacts_by_name(env, robot):
    """Reference scan: resolve every contact's geom names (slow, string based)."""
    m, d = env.model, env.data
    touching = set()
    for i in range(d.ncon):
        names = {mujoco.mj_id2name(m, mujoco.mjtObj.mjOBJ_GEOM, int(g)) for g in (d.contact[i].geom1, d.contact[i].geom2)}
        if FLOOR in names:
            touching |= names
    return np.array([float(f in touching) for f in FEET[robot]])


@pytest.mark.parametrize(
    "env_id,robot",
    [
        ("gradkit/HalfCheetahUni-v0", "HalfCheetah"),
        ("gradkit/Walker2dUni-v0", "Walker2d"),
        ("gradkit/HopperUni-v0", "Hopper"),
        ("gradkit/AntUni-v0", "Ant"),
    ],
)
def test_contact_fraction_is_mean_indicator_over_valid_steps(env_id, robot):
    env = make(env_id, episode_length=80)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    flags = []
    while True:
        _, r, term, trunc, info = env.step(rng.uniform(-1, 1, env.action_space.shape))
        flags.append(_contacts_by_name(env, robot))
        np.testing.assert_allclose(info["descriptor"], np.mean(flags, axis=0))
        assert r >= 0.0
        if term or trunc:
            break
    final = info["final_descriptor"]
    assert info["valid_steps"] == len(flags)
    np.testing.assert_allclose(final, np.mean(flags, axis=0))
    assert np.all((final >= 0) & (final <= 1))
    assert 0 < np.mean(flags) < 1  # the rollout has both contact and flight phases


def _settled_state(env, steps=60):
    env.reset(seed=0)
    for _ in range(steps):
        env.step(np.zeros(env.action_space.shape))
    return env.data.qpos.copy(), np.zeros_like(env.data.qvel)


def test_robot_that_never_lifts_a_foot_has_contact_fraction_one():
    env = make("gradkit/HalfCheetahUni-v0", episode_length=100)
    qpos, qvel = _settled_state(env)
    env.reset(seed=1)
    env.base_env.set_state(qpos, qvel)  # start resting on both feet
    for _ in range(100):
        _, _, term, trunc, info = env.step(np.zeros(6))
    assert trunc and not term
    np.testing.assert_array_equal(info["final_descriptor"], [1.0, 1.0])


def test_terminated_hopper_averages_only_valid_steps():
    env = make("gradkit/HopperUni-v0", episode_length=1000)
    env.reset(seed=0)
    flags = []
    for _ in range(1000):
        _, _, term, trunc, info = env.step(np.zeros(3))  # a passive hopper falls over
        flags.append(env.feet_in_contact()[0])
        if term or trunc:
            break
    assert term and not trunc and info["valid_steps"] == len(flags) < 1000
    assert info["final_descriptor"][0] == pytest.approx(np.mean(flags))
    assert info["final_descriptor"][0] > 0.5  # not diluted by the 1000 - n missing steps


# ---------------------------------------------------------------------- final x-y
@pytest.mark.parametrize("target,expected", [((2.0, -3.0), (2.0, -3.0)), ((40.0, -50.0), (30.0, -30.0))])
def test_ant_moved_to_known_xy_ends_there(target, expected):
    env = make("gradkit/AntOmni-v0", episode_length=20)
    qpos, _ = _settled_state(env)  # an ant resting on its legs
    env.reset(seed=1)
    qpos[:2] = target
    env.base_env.set_state(qpos, np.zeros_like(env.data.qvel))
    for _ in range(20):
        obs, r, term, trunc, info = env.step(np.zeros(8))
    assert trunc
    np.testing.assert_allclose(info["final_descriptor"], expected, atol=0.05)
    np.testing.assert_allclose(info["final_descriptor"], np.clip(env.data.qpos[:2], -30, 30))


def _push_forward(env_id, steps=250, speed=2.0):
    env = make(env_id, episode_length=steps)
    env.reset(seed=0)
    xs = []
    for _ in range(steps):
        env.data.qvel[0] = speed  # drive the torso along +x
        _, _, term, trunc, info = env.step(np.zeros(8))
        xs.append(env.data.qpos[0])
        if term or trunc:
            break
    return max(xs), info["final_descriptor"]


def test_trap_walls_block_a_straight_walk():
    free_x, free_desc = _push_forward("gradkit/AntOmni-v0")
    trap_x, trap_desc = _push_forward("gradkit/AntTrapOmni-v0")
    assert free_x > 15.0 and free_desc[0] > 15.0
    assert trap_x < 11.5 and trap_desc[0] < 11.5  # the front wall's inner face is at x = 11


def test_trap_model_keeps_torso_as_main_body():
    env = make("gradkit/AntTrapOmni-v0")
    assert mujoco.mj_id2name(env.model, mujoco.mjtObj.mjOBJ_BODY, 1) == "torso"
    walls = [mujoco.mj_name2id(env.model, mujoco.mjtObj.mjOBJ_GEOM, n) for n in ("trap_front", "trap_left", "trap_right")]
    assert min(walls) >= 0


# ---------------------------------------------------------------------- rendering, bad input
def test_rgb_array_rendering_offscreen():
    code = (
        "import gymnasium, gradkit_locomotion\n"
        "e = gymnasium.make('gradkit/HopperUni-v0', render_mode='rgb_array')\n"
        "e.reset(seed=0); img = e.render(); print(img.shape, img.dtype)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "MUJOCO_GL": "egl"}
    )
    if out.returncode != 0 and ("EGL" in out.stderr or "GL" in out.stderr):
        pytest.skip(f"no offscreen OpenGL here: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("(480, 480, 3) uint8")


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="episode_length"):
        gym.make("gradkit/HopperUni-v0", episode_length=0)
    with pytest.raises(ValueError, match="desc_bound"):
        AntOmni(desc_bound=-1.0)
    with pytest.raises(ValueError, match="shape"):
        PointOmniEnv().step(np.zeros(3))
    with pytest.raises(gym.error.Error):
        gym.make("gradkit/NoSuchTask-v0")
    # flags are not coerced: "no" would be truthy, 0 would pass as False
    for env_id in ("gradkit/HopperUni-v0", "gradkit/AntOmni-v0"):
        for key, bad in (("fixed_start", "no"), ("fused_step", 0), ("fused_step", None)):
            with pytest.raises(ValueError, match=f"{key} must be True or False"):
                gym.make(env_id, **{key: bad})
    assert make("gradkit/HopperUni-v0", fused_step=np.bool_(False)).uses_fused_step is False


def test_a_foot_with_several_floor_contacts_counts_once_and_other_pairs_not_at_all():
    """The step's contact scan on hand-made contact lists (the running fraction is contacts / valid steps)."""
    import types

    env = make("gradkit/HalfCheetahUni-v0", episode_length=10)
    env.reset(seed=0)
    floor = env._floor_id
    back, front = (int(g) for g in env.feet_geom_ids)
    other = next(g for g in range(env.model.ngeom) if g not in (floor, back, front))
    lists = [
        [[floor, back], [back, floor], [floor, back]],  # back foot, three contacts: one count
        [[front, floor], [back, other], [front, back]],  # front on the floor; back touches only non-floor geoms
        [],  # flight
    ]
    env.data = types.SimpleNamespace(ncon=0)  # the scan reads ncon here and the pairs from the contact list
    descs = []
    for pairs in lists:
        env.data.ncon = len(pairs)
        env._contacts = types.SimpleNamespace(geom=np.array(pairs, dtype=np.int64).reshape(-1, 2))
        descs.append(env.step(np.zeros(6))[4]["descriptor"])
    np.testing.assert_array_equal(descs, [[1.0, 0.0], [1 / 2, 1 / 2], [1 / 3, 1 / 3]])


# ----------------------------------------------------------------------------- issue 13: starts, actions, metadata
@pytest.mark.parametrize("env_id", ["gradkit/HalfCheetahUni-v0", "gradkit/AntOmni-v0", "gradkit/HopperUni-v0"])
def test_fixed_start_is_the_default_and_random_starts_are_an_option(env_id):
    env = gym.make(env_id, episode_length=5)
    a, _ = env.reset(seed=1)
    b, _ = env.reset(seed=2)
    np.testing.assert_array_equal(a, b)  # every episode starts from the initial pose at rest
    base = env.unwrapped.base_env.unwrapped
    np.testing.assert_array_equal(base.data.qvel, 0.0)
    rnd = gym.make(env_id, episode_length=5, fixed_start=False)
    c, _ = rnd.reset(seed=1)
    d, _ = rnd.reset(seed=2)
    assert not np.array_equal(c, d)
    with pytest.raises(ValueError, match="fixed_start"):
        gym.make(env_id, reset_noise_scale=0.1)


@pytest.mark.parametrize("env_id", ["gradkit/HalfCheetahUni-v0", "gradkit/AntOmni-v0", "gradkit/PointOmni-v0"])
def test_non_finite_actions_are_refused_before_the_physics_moves(env_id):
    env = gym.make(env_id).unwrapped
    env.reset(seed=0)
    n = env.action_space.shape[0]
    before = env.reset(seed=0)[0]
    for bad in (np.nan, np.inf, -np.inf):
        a = np.zeros(n)
        a[-1] = bad
        with pytest.raises(ValueError, match="finite"):
            env.step(a)
        with pytest.raises(ValueError, match="finite"):
            env.step(list(a))  # any array-like
    obs, r, *_ = env.step(np.zeros(n))
    ref = gym.make(env_id).unwrapped
    ref.reset(seed=0)
    obs2, r2, *_ = ref.step(np.zeros(n))
    np.testing.assert_array_equal(obs, obs2)
    assert r == r2 and np.all(np.isfinite(before))


def test_point_vector_env_refuses_non_finite_actions():
    from gradkit_locomotion.point import PointOmniVectorEnv

    venv = PointOmniVectorEnv(3)
    venv.reset(seed=0)
    with pytest.raises(ValueError, match="finite"):
        venv.step(np.array([[0.0, 0.0], [np.nan, 0.0], [0.0, 0.0]]))


def test_huge_finite_actions_are_not_mistaken_for_non_finite():
    env = gym.make("gradkit/HalfCheetahUni-v0").unwrapped
    env.reset(seed=0)
    with np.errstate(over="ignore"):  # gymnasium's control cost squares the action
        env.step(np.full(6, 1e308))  # the fast sum check overflows; the exact check lets it through


@pytest.mark.parametrize("env_id", sorted(gradkit_locomotion.TASKS))
def test_render_fps_in_metadata(env_id):
    env = gym.make(env_id)
    fps = env.unwrapped.metadata["render_fps"]
    assert isinstance(fps, int) and fps > 0
    if env_id != "gradkit/PointOmni-v0":
        assert fps == env.unwrapped.base_env.unwrapped.metadata["render_fps"]


@pytest.mark.parametrize("env_id", [i for i in gradkit_locomotion.TASKS if "Point" not in i])
def test_tasks_pickle_and_deepcopy_into_the_same_task(env_id):
    # as gymnasium's MuJoCo envs: a pickled task is rebuilt from its arguments (a fresh env, same settings)
    import copy
    import pickle

    env = make(env_id, episode_length=7, fixed_start=False)
    for clone in (pickle.loads(pickle.dumps(env)), copy.deepcopy(env)):
        assert type(clone) is type(env)
        assert clone.episode_length == 7 and clone.fixed_start is False
        assert clone.observation_space == env.observation_space and clone.descriptor_bounds[1].tolist() == \
            env.descriptor_bounds[1].tolist()
        o1, _ = env.reset(seed=3)
        o2, _ = clone.reset(seed=3)
        np.testing.assert_array_equal(o1, o2)
        for a in np.random.default_rng(0).uniform(-1, 1, size=(7,) + env.action_space.shape):
            s1, s2 = env.step(a), clone.step(a)
            np.testing.assert_array_equal(s1[0], s2[0])
            assert s1[1:4] == s2[1:4]
        np.testing.assert_array_equal(s1[4]["final_descriptor"], s2[4]["final_descriptor"])
