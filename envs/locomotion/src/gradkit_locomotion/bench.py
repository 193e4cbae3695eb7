"""Wrapper overhead: step time of every MuJoCo QD task vs the raw gymnasium v5 env it owns.

Both envs are built the same way (the task's own ``base_env`` configuration, no ``gymnasium.make``
wrappers on either side), stepped with the same pre-drawn random actions, in alternating blocks
in one process, each block timed in CPU time (``time.process_time``: other jobs on a shared machine
do not count); the reported ratio is the mean over blocks of task time / raw time (1.0 = no
overhead) with its standard error, and the claim (at most ``GOAL`` overhead) must hold with a
margin of two standard errors.
"""

from __future__ import annotations

import time

import numpy as np

from gradkit_core.results import Result
from gradkit_core.results import progress as _bar

GOAL = 1.05  # the QD layer may add at most 5% to the raw env's step time

TASK_IDS = (
    "gradkit/HalfCheetahUni-v0",
    "gradkit/HopperUni-v0",
    "gradkit/Walker2dUni-v0",
    "gradkit/AntUni-v0",
    "gradkit/AntOmni-v0",
    "gradkit/AntTrapOmni-v0",
)


class _Clock:
    """Steps an env through actions, resetting it on termination/truncation or after ``horizon`` steps.

    The raw v5 env has no time limit of its own; resetting it at the task's horizon too keeps both
    envs on the same trajectories (the same states, hence the same contacts and physics cost).
    """

    def __init__(self, env, horizon: int, seed: int):
        self.env, self.horizon, self.t = env, horizon, 0
        env.reset(seed=seed)

    def run(self, actions) -> float:
        env, horizon, t = self.env, self.horizon, self.t
        t0 = time.process_time()
        for a in actions:
            _, _, term, trunc, _ = env.step(a)
            t += 1
            if term or trunc or t >= horizon:
                env.reset()
                t = 0
        elapsed = time.process_time() - t0
        self.t = t
        return elapsed


def run(*, quick: bool = False, out=None, seed: int = 0, progress: bool = True) -> Result:  # noqa: ARG001
    import gymnasium as gym

    import gradkit_locomotion  # noqa: F401  (registers the ids)

    n_steps, n_blocks = (500, 6) if quick else (1000, 30)
    res = Result("locomotion", title=f"QD task step time vs raw gymnasium env ({n_steps * n_blocks} steps each)")
    ratios = {}
    for env_id in _bar(TASK_IDS, desc="locomotion bench", enabled=progress):
        task = gym.make(env_id, episode_length=1000).unwrapped
        raw = gym.make(env_id, episode_length=1000).unwrapped.base_env  # same options, no QD layer
        rng = np.random.default_rng(seed)
        acts = rng.uniform(-1, 1, size=(n_blocks, n_steps) + task.action_space.shape)
        c_task, c_raw = _Clock(task, 1000, seed), _Clock(raw, 1000, seed)
        t_task, t_raw = [], []
        for b in range(n_blocks):  # alternate blocks so both see the same machine load
            t_raw.append(c_raw.run(acts[b]))
            t_task.append(c_task.run(acts[b]))
        n = n_steps * n_blocks
        per_block = np.array(t_task) / np.array(t_raw)
        ratio = float(per_block.mean())
        se = float(per_block.std(ddof=1) / np.sqrt(len(per_block)))
        t_task, t_raw = sum(t_task), sum(t_raw)
        ratios[env_id] = (ratio, se)
        res.add_row(env=env_id, raw_us_per_step=1e6 * t_raw / n, task_us_per_step=1e6 * t_task / n,
                    overhead_ratio=ratio, ratio_se=se, median_ratio=float(np.median(per_block)))
        task.close()
        raw.close()
    worst = max(ratios, key=lambda k: ratios[k][0])
    r, se = ratios[worst]
    res.add_claim(
        f"the QD layer (action check, descriptor scan, reward clip, time feature) adds at most "
        f"{100 * (GOAL - 1):.0f}% to the raw env's step time (CPU time; ratio + 2 SE <= {GOAL})",
        r + 2 * se <= GOAL,
        f"worst {worst}: x{r:.3f} ± {se:.3f}",
    )
    res.meta.update(n_steps=n_steps * n_blocks, n_blocks=n_blocks, seed=seed, clock="process_time")
    res.add_note("single process; overhead_ratio = mean over alternating blocks of task CPU time / raw v5 env CPU time "
                 "(same base options), ratio_se its standard error over blocks")
    return res

