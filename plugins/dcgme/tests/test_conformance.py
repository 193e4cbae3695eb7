"""The three agents follow gradkit's agent contract (learn/predict/save/load/evaluate, seeding, errors)."""

import gymnasium
import pytest

import gradkit_locomotion  # noqa: F401  (registers the task ids)
from gradkit_core.testing.agents import AgentConformance

TINY = dict(n_cells=16, n_init_cvt_samples=1000, init_batch=8, ga_batch=4, pg_batch=4, actor_episodes=4,
            policy_hidden=(16, 16), critic_hidden=(32, 32), critic_steps=6, pg_steps=3, batch_size=32,
            replay_size=20_000)


class _QD(AgentConformance):
    component_kwargs = TINY
    learn_steps = 2  # QD iterations

    @pytest.fixture
    def make_env(self):
        return lambda: gymnasium.make("gradkit/PointOmni-v0")


class TestDCGME(_QD):
    component = "dcg-me"


class TestPGAME(_QD):
    component = "pga-me"


class TestMAPElites(_QD):
    component = "map-elites"
