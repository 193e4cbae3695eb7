"""Where the QD layer's time goes on one task: the layer's step with one part removed at a time, against the
raw gymnasium env, side by side in one process (CPU time, median of interleaved repetitions).

    OMP_NUM_THREADS=1 .venv/bin/python tools/profile_locomotion_step.py [--env gradkit/HalfCheetahUni-v0]

Each variant re-implements ``LocomotionEnv.step`` (feet-contact tasks) with the named part left out:
``-check`` the non-finite-action check, ``-scan`` the feet-contact scan, ``-desc`` the running-descriptor array,
``-obs`` the observation copy with the time feature; ``bare`` keeps only forwarding the step, the reward offset
and clip and the step count.  ``full`` (all parts) must cost what the task's own ``step`` on gymnasium's step
(``task``, built with ``fused_step=False``) costs, which checks that the replica is faithful.  ``fused`` is the task
as built by default (the v5 step computed by ``gradkit_locomotion.fused``, bit-for-bit gymnasium's result), and
``physics`` is MuJoCo alone (``ctrl``, ``mj_step`` over ``frame_skip``, ``mj_rnePostConstraint``), the floor.
Prints µs per step and the difference to the raw env.
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np


def variant(task, check=True, scan=True, desc=True, obs=True):
    def step(action):
        if check and not math.isfinite(sum(action.tolist())):
            raise ValueError("non-finite action")
        base_obs, reward, terminated, truncated, info = task.base_env.step(action)
        t = task._t = task._t + 1
        reward = float(reward) + task.reward_offset
        if reward < 0.0 and task.clip_reward:
            reward = 0.0
        sums = task._contact_sum
        if scan and task.data.ncon:
            floor, foot_of, seen = task._floor_id, task._foot_index, 0
            for g1, g2 in task._contacts.geom.tolist():
                k = foot_of.get(g2, -1) if g1 == floor else foot_of.get(g1, -1) if g2 == floor else -1
                if k >= 0 and not (seen >> k) & 1:
                    seen |= 1 << k
                    sums[k] += 1.0
        d = None
        if desc:
            d = np.empty(len(sums))
            for k, c in enumerate(sums):
                d[k] = c / t
        info["descriptor"] = d
        info["valid_steps"] = t
        truncated = truncated or t >= task.episode_length
        if (terminated or truncated) and d is not None:
            info["final_descriptor"] = d.copy()
        if obs:
            o = np.empty(task._n_base + 1)
            o[:-1] = base_obs
            o[-1] = (task.episode_length - t) / task.episode_length
        else:
            o = base_obs
        return o, reward, bool(terminated), bool(truncated), info
    return step


def main() -> None:
    import gymnasium as gym

    import gradkit_locomotion  # noqa: F401

    ap = argparse.ArgumentParser()
    ap.add_argument("--env", default="gradkit/HalfCheetahUni-v0")
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    task = gym.make(args.env, episode_length=10**9, fused_step=False).unwrapped
    fused = gym.make(args.env, episode_length=10**9).unwrapped
    if not task._feet_scan:
        raise SystemExit(f"{args.env} has no feet-contact descriptor; pick a *Uni task")
    raw = gym.make(args.env, episode_length=10**9).unwrapped.base_env
    acts = np.random.default_rng(0).uniform(-1, 1, size=(args.steps,) + task.action_space.shape)
    import mujoco

    m, d, nstep = raw.model, raw.data, raw.frame_skip

    def physics(a):
        d.ctrl[:] = a
        mujoco.mj_step(m, d, nstep)
        mujoco.mj_rnePostConstraint(m, d)

    variants = {"raw": raw.step, "physics": physics, "fused": fused.step, "task": task.step, "full": variant(task),
                "-check": variant(task, check=False), "-scan": variant(task, scan=False),
                "-desc": variant(task, desc=False), "-obs": variant(task, obs=False),
                "bare": variant(task, False, False, False, False)}
    times = {k: [] for k in variants}
    for _ in range(args.reps):
        for name, fn in variants.items():
            raw.reset(seed=0)
            task.reset(seed=0)
            fused.reset(seed=0)
            t0 = time.process_time()
            for a in acts:
                fn(a)
            times[name].append((time.process_time() - t0) / len(acts) * 1e6)
    base = float(np.median(times["raw"]))
    print(f"{args.env}: CPU µs per step (median of {args.reps} interleaved repetitions of {args.steps} steps)")
    for k, v in times.items():
        m = float(np.median(v))
        print(f"  {k:7s} {m:7.2f}  ({m - base:+5.2f} vs raw, ratio {m / base:.3f})")


if __name__ == "__main__":
    main()
