"""Speed of the two inner loops next to what a user would otherwise write or pick.

1. Policy evaluation: B policies rolled out together (one vector env, one batched forward
   pass per step) vs one policy at a time in a single env (same genomes, same episodes).
2. Archive insertion: :class:`gradkit_dcgme.archive.CVTArchive` vs ``ribs.archives.CVTArchive``
   (same centroids, same batches), when ribs is installed.

Reported as ratios (> 1: ours is faster), in one process.
"""

from __future__ import annotations

import time

import numpy as np

from gradkit_core.results import Result


def _loop_rollouts(env_id, kwargs, genomes, shape, seed):
    import gymnasium as gym
    import torch

    from .networks import policy_forward

    env = gym.make(env_id, **kwargs)
    returns = []
    for i in range(genomes.shape[0]):
        obs, _ = env.reset(seed=seed + i)
        ret = 0.0
        while True:
            with torch.no_grad():
                a = policy_forward(genomes[i:i + 1], torch.as_tensor(obs, dtype=torch.float32)[None], shape)[0]
            obs, r, term, trunc, _ = env.step(a.double().numpy())
            ret += r
            if term or trunc:
                break
        returns.append(ret)
    env.close()
    return np.array(returns)


def run(*, quick: bool = False, out=None, seed: int = 0, progress: bool = True) -> Result:  # noqa: ARG001
    import torch

    from .archive import CVTArchive, cvt_centroids
    from .evaluation import Evaluator
    from .networks import PolicyShape, init_genomes

    torch.set_num_threads(1)
    res = Result("dcgme", title="DCG-ME inner loops: batched evaluation and archive insertion")
    reps = 2 if quick else 5
    cases = [("gradkit/PointOmni-v0", {}, 64, (32, 32)), ("gradkit/HopperUni-v0", {"episode_length": 100}, 16, (64, 64))]
    for env_id, kw, n, hidden in cases:
        ev = Evaluator(env_id, kw)
        shape = PolicyShape(ev.obs_dim, hidden, ev.act_dim)
        genomes = init_genomes(shape, n, torch.Generator().manual_seed(seed))
        ev.rollout(genomes, shape, seed)  # build the vector env outside the timing
        t_b = t_l = 0.0
        for _ in range(reps):
            t0 = time.perf_counter()
            batched = ev.rollout(genomes, shape, seed)
            t_b += time.perf_counter() - t0
            t0 = time.perf_counter()
            looped = _loop_rollouts(env_id, kw, genomes, shape, seed)
            t_l += time.perf_counter() - t0
        same = np.allclose(batched["fitness"], looped, rtol=1e-5)
        res.add_row(benchmark=f"evaluate {n} policies on {env_id}", ours_s=t_b / reps, reference="one at a time",
                    reference_s=t_l / reps, speedup=t_l / t_b, same_result=same)
        ev.close()

    try:
        from ribs.archives import CVTArchive as RibsCVT
    except ImportError:
        res.add_note("ribs not installed: archive comparison skipped (pip install ribs)")
    else:
        rng = np.random.default_rng(seed)
        cells, dim, batch, n_batches = 1024, 2, 256, 10 if quick else 40
        centroids = cvt_centroids(cells, [-1, -1], [1, 1], n_init_samples=20_000, seed=seed)
        sols = rng.standard_normal((n_batches, batch, 64)).astype(np.float32)
        fits = rng.uniform(0, 100, (n_batches, batch))
        descs = rng.uniform(-1, 1, (n_batches, batch, dim))
        ours = CVTArchive(cells, [-1, -1], [1, 1], 64, centroids=centroids)
        theirs = RibsCVT(solution_dim=64, centroids=centroids, ranges=[(-1, 1), (-1, 1)])
        t0 = time.perf_counter()
        for b in range(n_batches):
            ours.add(sols[b], fits[b], descs[b])
        t_o = time.perf_counter() - t0
        t0 = time.perf_counter()
        for b in range(n_batches):
            theirs.add(sols[b], fits[b], descs[b])
        t_r = time.perf_counter() - t0
        same = np.isclose(ours.qd_score(), float(theirs.stats.qd_score)) and np.isclose(
            ours.coverage(), float(theirs.stats.coverage))
        res.add_row(benchmark=f"insert {n_batches}x{batch} into {cells} CVT cells", ours_s=t_o, reference="ribs 0.12",
                    reference_s=t_r, speedup=t_r / t_o, same_result=bool(same))
    res.add_note("speedup = reference time / ours; single process, torch 1 thread")
    return res
