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
    ``resets`` lists the step indices (within the last block) after which the env was reset.
    """

    def __init__(self, env, horizon: int, seed: int):
        self.env, self.horizon, self.t = env, horizon, 0
        self.resets = []
        env.reset(seed=seed)

    def run(self, actions) -> float:
        env, horizon, t = self.env, self.horizon, self.t
        resets = []
        t0 = time.process_time()
        for i, a in enumerate(actions):
            _, _, term, trunc, _ = env.step(a)
            t += 1
            if term or trunc or t >= horizon:
                env.reset()
                resets.append(i)
                t = 0
        elapsed = time.process_time() - t0
        self.t, self.resets = t, resets
        return elapsed


class _PhysicsClock:
    """MuJoCo alone: ``data.ctrl[:] = a``, ``mj_step`` (frame_skip substeps), ``mj_rnePostConstraint`` --
    the physics every v5 step runs, without any Python around it -- reset where the raw env was reset,
    so it follows the same trajectories.  The floor under any step function."""

    def __init__(self, env, seed: int):
        import mujoco

        self.env = env
        self.model, self.data, self.nstep = env.model, env.data, env.frame_skip
        self.mj_step, self.mj_rne = mujoco.mj_step, mujoco.mj_rnePostConstraint
        env.reset(seed=seed)

    def run(self, actions, resets) -> float:
        m, d, nstep, mj_step, mj_rne, ctrl = self.model, self.data, self.nstep, self.mj_step, self.mj_rne, self.data.ctrl
        resets = set(resets)
        t0 = time.process_time()
        for i, a in enumerate(actions):
            ctrl[:] = a
            mj_step(m, d, nstep)
            mj_rne(m, d)
            if i in resets:
                self.env.reset()
        return time.process_time() - t0


def run(*, quick: bool = False, out=None, seed: int = 0, progress: bool = True) -> Result:  # noqa: ARG001
    import gymnasium as gym

    import gradkit_locomotion  # noqa: F401  (registers the ids)

    n_steps, n_blocks = (500, 6) if quick else (1000, 30)
    res = Result("locomotion", title=f"QD task step time vs raw gymnasium env ({n_steps * n_blocks} steps each)")
    ratios = {}
    for env_id in _bar(TASK_IDS, desc="locomotion bench", enabled=progress):
        task = gym.make(env_id, episode_length=1000).unwrapped
        raw = gym.make(env_id, episode_length=1000).unwrapped.base_env  # same options, no QD layer
        phys = gym.make(env_id, episode_length=1000).unwrapped.base_env
        rng = np.random.default_rng(seed)
        acts = rng.uniform(-1, 1, size=(n_blocks, n_steps) + task.action_space.shape)
        c_task, c_raw, c_phys = _Clock(task, 1000, seed), _Clock(raw, 1000, seed), _PhysicsClock(phys, seed)
        t_task, t_raw, t_phys = [], [], []
        for b in range(n_blocks):  # alternate blocks so all see the same machine load
            t_raw.append(c_raw.run(acts[b]))
            t_task.append(c_task.run(acts[b]))
            t_phys.append(c_phys.run(acts[b], c_raw.resets))
        n = n_steps * n_blocks
        t_task, t_raw, t_phys = np.array(t_task), np.array(t_raw), np.array(t_phys)
        per_block = t_task / t_raw
        ratio = float(per_block.mean())
        se = float(per_block.std(ddof=1) / np.sqrt(len(per_block)))
        ratios[env_id] = (ratio, se)
        res.add_row(env=env_id, fused_step=task.uses_fused_step, physics_us_per_step=1e6 * t_phys.sum() / n,
                    raw_us_per_step=1e6 * t_raw.sum() / n, task_us_per_step=1e6 * t_task.sum() / n,
                    overhead_ratio=ratio, ratio_se=se, median_ratio=float(np.median(per_block)),
                    raw_over_physics=float(np.mean(t_raw / t_phys)), task_over_physics=float(np.mean(t_task / t_phys)))
        task.close()
        raw.close()
        phys.close()
    worst = max(ratios, key=lambda k: ratios[k][0])
    r, se = ratios[worst]
    res.add_claim(
        f"a QD task step (the v5 step and the QD layer: action check, descriptor scan, reward clip, time "
        f"feature) costs at most {100 * (GOAL - 1):.0f}% more than the raw v5 env's step (CPU time; ratio + 2 SE "
        f"<= {GOAL})",
        r + 2 * se <= GOAL,
        f"worst {worst}: x{r:.3f} ± {se:.3f}",
    )
    res.meta.update(n_steps=n_steps * n_blocks, n_blocks=n_blocks, seed=seed, clock="process_time")
    res.add_note("single process; overhead_ratio = mean over alternating blocks of task CPU time / raw v5 env CPU time "
                 "(same base options), ratio_se its standard error over blocks; physics = ctrl + mj_step + "
                 "mj_rnePostConstraint alone on the same trajectories (the floor); fused_step: the task computes the "
                 "v5 step itself (gradkit_locomotion.fused, bit-for-bit gymnasium's result) instead of calling it")
    return res
