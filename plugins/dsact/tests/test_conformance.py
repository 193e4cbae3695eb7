"""The kind's contract (gradkit_core.testing.agents) for dsac-t, dsac-v1, sac and td3."""

import gymnasium as gym
import pytest
import torch

from gradkit_core.testing.agents import AgentConformance

torch.set_num_threads(1)
TINY = dict(hidden=(16, 16), activation="relu", batch_size=16, warmup=30, env_steps_per_update=1, buffer_size=2000)


class _Pendulum(AgentConformance):
    component_kwargs = TINY
    learn_steps = 70
    eval_episodes = 2

    @pytest.fixture
    def make_env(self):
        return lambda: gym.make("Pendulum-v1")


class TestDSACTConformance(_Pendulum):
    component = "dsac-t"


class TestDSACv1Conformance(_Pendulum):
    component = "dsac-v1"


class TestSACConformance(_Pendulum):
    component = "sac"


class TestTD3Conformance(_Pendulum):
    component = "td3"
