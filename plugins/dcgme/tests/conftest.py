import pytest

#: a tiny PointOmni configuration: seconds per iteration, all code paths exercised
TINY = dict(n_cells=16, n_init_cvt_samples=1000, init_batch=8, ga_batch=4, pg_batch=4, actor_episodes=4,
            policy_hidden=(16, 16), critic_hidden=(32, 32), critic_steps=6, pg_steps=3, batch_size=32,
            replay_size=20_000)


@pytest.fixture
def tiny():
    return dict(TINY)
