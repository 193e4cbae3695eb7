"""Each generation's rollouts on an executor (issue 17): chunks of the batch run on workers and are merged
back into exactly what one in-process rollout of the whole batch gives, so archives, replay buffers and
metrics are identical to serial evaluation for fixed seeds."""

import numpy as np
import pytest
import torch

from gradkit_core import executors
from gradkit_dcgme.algorithm import DCGME, MAPElites, PGAME
from gradkit_dcgme.evaluation import Evaluator, ParallelRollouts, merge_rollouts
from gradkit_dcgme.networks import PolicyShape, init_genomes

KEYS = ("fitness", "descriptor", "length", "obs", "action", "reward", "next_obs", "terminated", "episode", "step")


def assert_same_rollout(a, b):
    assert set(a) == set(b)
    for k in KEYS:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def chunked(ev, genomes, shape, seed, bounds):
    parts = [ev.rollout(genomes[a:b], shape, seed + a) for a, b in bounds]
    return merge_rollouts(parts, [a for a, _ in bounds])


@pytest.mark.parametrize("env_id, kwargs", [
    ("gradkit/PointOmni-v0", dict(reset_noise_scale=0.3)),                    # numpy vector env, random starts
    ("gradkit/HopperUni-v0", dict(episode_length=60, fixed_start=False)),    # MuJoCo, early terminations
])
def test_chunks_merge_into_the_whole_batch_rollout(env_id, kwargs):
    ev = Evaluator(env_id, kwargs)
    shape = PolicyShape(ev.obs_dim, (8,), ev.act_dim)
    g = init_genomes(shape, 7, torch.Generator().manual_seed(0)) * 3
    whole = ev.rollout(g, shape, seed=11)
    lengths = whole["length"]
    if env_id.startswith("gradkit/Hopper"):
        assert len(set(lengths.tolist())) > 1, "episodes of different lengths exercise the (step, episode) merge"
    # steps are ordered, episodes ascending within a step
    assert np.all(np.diff(whole["step"]) >= 0)
    for t in np.unique(whole["step"]):
        assert np.all(np.diff(whole["episode"][whole["step"] == t]) > 0)
    assert_same_rollout(chunked(ev, g, shape, 11, [(0, 3), (3, 5), (5, 7)]), whole)
    # a wrong seed offset or a missing episode shift does not merge into the same thing
    parts = [ev.rollout(g[0:3], shape, 11), ev.rollout(g[3:7], shape, 11)]
    bad = merge_rollouts(parts, [0, 3])
    assert not np.array_equal(bad["descriptor"], whole["descriptor"])
    ev.close()


def archive_state(agent):
    a = agent.archive
    state = [a.filled.copy(), a.fitness[a.filled].copy(), a.descriptors[a.filled].copy(), a.genomes[a.filled].copy()]
    if agent.uses_pg:
        buf = agent.buffer.state_dict()
        state += [np.asarray(buf[k]) for k in sorted(buf)]
    return state


def assert_same_archive(a, b):
    for x, y in zip(archive_state(a), archive_state(b)):
        np.testing.assert_array_equal(x, y)
    assert a.history == b.history


@pytest.mark.parametrize("cls", [DCGME, PGAME, MAPElites])
def test_agents_give_identical_archives_when_each_generation_runs_in_chunks(cls, tiny):
    env_kwargs = dict(reset_noise_scale=0.3)  # random starts: seeds must reach every chunk right
    ref = cls("gradkit/PointOmni-v0", seed=3, env_kwargs=env_kwargs, **tiny).learn(2)
    ex = executors.SerialExecutor()
    par = cls("gradkit/PointOmni-v0", seed=3, env_kwargs=env_kwargs, jobs=3, executor=ex, **tiny).learn(2)
    assert par.parallel is not None and par.parallel.chunks == 3
    assert_same_archive(ref, par)
    if cls is DCGME:
        assert ref.evaluate_dc_actor() == par.evaluate_dc_actor()
    assert ref.evaluate(3) == par.evaluate(3)
    ref.close(), par.close()


def test_local_worker_processes_give_the_same_archive_on_a_mujoco_task(tiny):
    kw = dict(tiny, init_batch=6, ga_batch=3, pg_batch=3, actor_episodes=2)
    env_kwargs = dict(episode_length=25, fixed_start=False)
    ref = DCGME("gradkit/HopperUni-v0", seed=1, env_kwargs=env_kwargs, **kw).learn(2)
    par = DCGME("gradkit/HopperUni-v0", seed=1, env_kwargs=env_kwargs, jobs=2, executor="local", **kw)
    try:
        par.learn(2)
        pool = par.parallel.executor._pool
        assert pool is not None, "the workers stay up between generations"
        assert_same_archive(ref, par)
    finally:
        par.close()
    assert par.parallel.executor._pool is None, "close() stops the workers"
    ref.close()


def test_bad_jobs_and_a_failing_chunk_are_clear_errors(tiny):
    with pytest.raises(ValueError, match="jobs .* positive integer"):
        DCGME("gradkit/PointOmni-v0", jobs=0, **tiny)
    with pytest.raises(executors.ExecutorError, match="unknown executor"):
        DCGME("gradkit/PointOmni-v0", jobs=2, executor="dask", **tiny)
    pr = ParallelRollouts("gradkit/PointOmni-v0", {}, 2, executor=executors.SerialExecutor())
    shape = PolicyShape(5, (4,), 2)
    g = torch.full((4, shape.n_params), float("nan"))
    with pytest.raises(executors.ExecutorError, match=r"rollout chunk 0 \(genomes 0..1, seed 5\)"):
        pr.rollout(g, shape, 5)
    pr.close()
