"""TD3 on Hopper-v5 with the dsact ``--full`` settings: gradkit's TD3, or stable-baselines3's TD3 as a reference.

    OMP_NUM_THREADS=1 .venv/bin/python tools/dsact_hopper_td3.py --agent gradkit --seed 0 [--out results/dsact-hopper]
    OMP_NUM_THREADS=1 .venv/bin/python tools/dsact_hopper_td3.py --agent sb3 --seed 0

Settings (both): 100k env steps, 5000 random warm-up steps, one gradient iteration per env step, 2x256 ReLU,
lr 3e-4, tau 0.005, batch 256, policy delay 2, target noise 0.2 clipped at 0.5, exploration N(0, 0.1^2);
5 deterministic evaluation episodes every 5000 steps.  The gradkit run is exactly the TD3 task of
``gradkit reproduce dsact --full`` (``reproduce._run_full``) and is stored in ``OUT/runs``, so
``run(full=True, out=OUT, resume=True)`` reuses it.  Prints the evaluation curve, the final return, the mean of
the last 20 % (4 evaluations), the CPU time of the call (~0 when a stored gradkit run is read back) and, for
gradkit, the mean |normalised Q bias| over the second half.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

STEPS, EVAL_EVERY = 100_000, 5000


def gradkit_td3(seed: int, out: str) -> dict:
    import gradkit_dsact.reproduce as R
    from gradkit_core.results import run_many

    hp = dict(R.MUJOCO_HP)
    hp["activation"] = "relu"  # as in _run_full for SAC and TD3
    task = dict(algo="td3", env_id="Hopper-v5", seed=seed, steps=STEPS, eval_every=EVAL_EVERY, eval_episodes=5, hp=hp,
                reward_scale=1.0, q_bias_every=EVAL_EVERY)
    r = run_many(R._train_record, [task], jobs=1, cache_dir=Path(out) / "runs", resume=True, progress_bar=False,
                 shared=dict(progress=False))[0]
    return dict(curve=[round(v) for v in r["y"]], final=float(r["final"]), tail20=R._tail_mean(r["y"]),
                abs_q_bias_second_half=R._abs_bias(r["bias"]), wall_s=r["wall"])


def sb3_td3(seed: int) -> dict:
    import gymnasium as gym
    import torch
    from stable_baselines3 import TD3
    from stable_baselines3.common.evaluation import evaluate_policy
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_num_threads(1)
    env, ev = gym.make("Hopper-v5"), gym.make("Hopper-v5")
    n = env.action_space.shape[0]
    model = TD3("MlpPolicy", env, learning_rate=3e-4, buffer_size=1_000_000, learning_starts=5000, batch_size=256,
                tau=0.005, gamma=0.99, train_freq=1, gradient_steps=1, policy_delay=2, target_policy_noise=0.2,
                target_noise_clip=0.5, action_noise=NormalActionNoise(np.zeros(n), 0.1 * np.ones(n)),
                policy_kwargs=dict(net_arch=[256, 256]), seed=seed, device="cpu")
    t0 = time.time()
    ev.reset(seed=10_000 + seed)
    curve = []
    for _ in range(STEPS // EVAL_EVERY):
        model.learn(EVAL_EVERY, reset_num_timesteps=False)
        m, _ = evaluate_policy(model, ev, n_eval_episodes=5, deterministic=True, warn=False)
        curve.append(round(float(m)))
    return dict(curve=curve, final=float(curve[-1]), tail20=float(np.mean(curve[-4:])), wall_s=time.time() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--agent", choices=("gradkit", "sb3"), default="gradkit")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="results/dsact-hopper")
    args = ap.parse_args()
    c0 = time.process_time()
    res = gradkit_td3(args.seed, args.out) if args.agent == "gradkit" else sb3_td3(args.seed)
    # CPU time of this call: a stored gradkit run is read back, not rerun, and then costs ~0 here
    res["cpu_s_this_call"] = time.process_time() - c0
    print(json.dumps(dict(agent=args.agent, seed=args.seed, **res)))


if __name__ == "__main__":
    main()
