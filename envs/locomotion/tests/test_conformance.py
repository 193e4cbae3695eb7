"""Every task id passes the gradkit env conformance suite (check_env, spaces, seeding, registration)."""


import pytest

import gradkit_locomotion  # noqa: F401  (registers the ids)
from gradkit_core.testing.envs import EnvConformance



class TestPointOmni(EnvConformance):
    env_id = "gradkit/PointOmni-v0"
    component = "gradkit/PointOmni-v0"
    max_episode_steps = 50


class _Mujoco(EnvConformance):
    # "human" rendering needs a display; rgb_array rendering is tested in test_tasks.py
    skip_render_check = True
    component_kwargs = {"episode_length": 40}
    max_episode_steps = 40


class TestAntOmni(_Mujoco):
    env_id = "gradkit/AntOmni-v0"
    component = "gradkit/AntOmni-v0"


class TestAntTrapOmni(_Mujoco):
    env_id = "gradkit/AntTrapOmni-v0"
    component = "gradkit/AntTrapOmni-v0"


class TestHalfCheetahUni(_Mujoco):
    env_id = "gradkit/HalfCheetahUni-v0"
    component = "gradkit/HalfCheetahUni-v0"


class TestWalker2dUni(_Mujoco):
    env_id = "gradkit/Walker2dUni-v0"
    component = "gradkit/Walker2dUni-v0"


class TestHopperUni(_Mujoco):
    env_id = "gradkit/HopperUni-v0"
    component = "gradkit/HopperUni-v0"


class TestAntUni(_Mujoco):
    env_id = "gradkit/AntUni-v0"
    component = "gradkit/AntUni-v0"


def test_every_registered_id_has_a_conformance_class():
    covered = {c.env_id for c in globals().values() if isinstance(c, type) and issubclass(c, EnvConformance)}
    assert set(gradkit_locomotion.TASKS) <= covered


@pytest.mark.parametrize("env_id", sorted(gradkit_locomotion.TASKS))
def test_component_name_is_the_gymnasium_id(env_id):
    import gradkit_core as gk

    assert gradkit_locomotion.component_name(env_id) == env_id
    spec = gk.info(env_id, kind="envs")
    assert spec.target == gradkit_locomotion.TASKS[env_id].entry_point
    assert env_id in spec.summary
