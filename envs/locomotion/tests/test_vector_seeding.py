"""PointOmni's numpy vector env seeds sub-env i with seed + i (as gymnasium's SyncVectorEnv does), so a
batch of episodes split into chunks starts each episode exactly where the whole batch would."""

import numpy as np
import pytest

from gradkit_locomotion.point import PointOmniEnv, PointOmniVectorEnv


@pytest.mark.parametrize("seed", [0, 7])
def test_vector_rows_equal_single_envs_seeded_seed_plus_i(seed):
    venv = PointOmniVectorEnv(5, reset_noise_scale=0.5)
    obs, _ = venv.reset(seed=seed)
    for i in range(5):
        single = PointOmniEnv(reset_noise_scale=0.5)
        o, _ = single.reset(seed=seed + i)
        np.testing.assert_array_equal(obs[i], o)
    assert len({tuple(r) for r in obs[:, :2]}) == 5  # the starts differ between sub-envs


def test_chunks_start_where_the_whole_batch_does():
    whole, _ = PointOmniVectorEnv(6, reset_noise_scale=0.5).reset(seed=3)
    head, _ = PointOmniVectorEnv(2, reset_noise_scale=0.5).reset(seed=3)
    tail, _ = PointOmniVectorEnv(4, reset_noise_scale=0.5).reset(seed=3 + 2)
    np.testing.assert_array_equal(whole, np.concatenate([head, tail]))


def test_unseeded_reset_continues_each_generator():
    venv = PointOmniVectorEnv(3, reset_noise_scale=0.5)
    first, _ = venv.reset(seed=1)
    second, _ = venv.reset()
    assert not np.array_equal(first[:, :2], second[:, :2])
    again = PointOmniVectorEnv(3, reset_noise_scale=0.5)
    again.reset(seed=1)
    np.testing.assert_array_equal(again.reset()[0], second)
