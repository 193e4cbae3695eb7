"""Gradient updates per second: gradkit's DSAC-T / DSAC-v1 / SAC / TD3 vs stable-baselines3's SAC and TD3.

All agents get the same networks (hidden sizes and activation), batch size, env
(Pendulum-v1) and a replay buffer holding the same number of random transitions; only
the gradient iterations are timed (no env steps).  Rounds are interleaved and the median
per method is reported, with ratios to SB3's SAC.  One torch thread.
"""

from __future__ import annotations

import statistics
import time
from typing import Dict, List

from gradkit_core.results import Result, progress as _progress


def _ours(algo: str, hidden, activation: str, batch: int, n_fill: int, seed: int):
    from .agent import _ALGOS

    agent = _ALGOS[algo]("Pendulum-v1", seed=seed, hidden=hidden, activation=activation, batch_size=batch,
                         warmup=n_fill, env_steps_per_update=1, buffer_size=max(n_fill, batch))
    agent.learn(n_fill)  # random-action warm-up fills the buffer

    def step(n):
        for _ in range(n):
            agent._update(agent.buffer.sample(batch, agent.gen))
            agent.n_updates += 1

    return step


def _sb3(hidden, activation: str, batch: int, n_fill: int, seed: int, algo: str = "sac"):
    import gymnasium as gym
    import stable_baselines3
    import torch

    klass = {"sac": stable_baselines3.SAC, "td3": stable_baselines3.TD3}[algo]
    act = {"relu": torch.nn.ReLU, "gelu": torch.nn.GELU}[activation]
    model = klass("MlpPolicy", gym.make("Pendulum-v1"), batch_size=batch, learning_starts=n_fill,
                   policy_kwargs=dict(net_arch=list(hidden), activation_fn=act), seed=seed, device="cpu", verbose=0)
    model.learn(n_fill)  # learning_starts = n_fill: random actions, no updates yet

    def step(n):
        model.train(gradient_steps=n, batch_size=batch)

    return step


def run(*, quick: bool = False, out=None, seed: int = 0, progress: bool = True) -> Result:
    import torch

    torch.set_num_threads(1)
    hidden = (64, 64) if quick else (256, 256)
    batch = 64 if quick else 256
    n_updates = 50 if quick else 200
    rounds = 2 if quick else 3
    n_fill = 500
    res = Result("dsact", title=f"updates/s, hidden {hidden} ReLU, batch {batch}, 1 thread (Pendulum-v1)")
    makers = {
        "gradkit dsac-t": lambda: _ours("dsac-t", hidden, "relu", batch, n_fill, seed),
        "gradkit dsac-v1": lambda: _ours("dsac-v1", hidden, "relu", batch, n_fill, seed),
        "gradkit sac": lambda: _ours("sac", hidden, "relu", batch, n_fill, seed),
        "gradkit td3": lambda: _ours("td3", hidden, "relu", batch, n_fill, seed),
    }
    try:
        import stable_baselines3  # noqa: F401

        makers["sb3 SAC"] = lambda: _sb3(hidden, "relu", batch, n_fill, seed, "sac")
        makers["sb3 TD3"] = lambda: _sb3(hidden, "relu", batch, n_fill, seed, "td3")
    except ImportError:
        res.add_note("stable-baselines3 is not installed: no peer column (pip install 'gradkit-dsact[test]')")
    steppers = {k: m() for k, m in makers.items()}
    times: Dict[str, List[float]] = {k: [] for k in steppers}
    bar = _progress(total=rounds * len(steppers), desc="dsact bench", enabled=progress)
    for k, s in steppers.items():
        s(5)  # warm-up (allocations, Adam state)
    for _ in range(rounds):
        for k, s in steppers.items():
            t0 = time.process_time()  # CPU time: robust to other jobs on a shared machine
            s(n_updates)
            times[k].append(time.process_time() - t0)
            bar.update(1)
    bar.close()
    ups = {k: n_updates / statistics.median(v) for k, v in times.items()}
    ref, ref_td3 = ups.get("sb3 SAC"), ups.get("sb3 TD3")
    for k, u in ups.items():
        row = dict(method=k, updates_per_s=u)
        if ref:
            row["ratio_vs_sb3_sac"] = u / ref
        if ref_td3:
            row["ratio_vs_sb3_td3"] = u / ref_td3
        row["ratio_vs_gradkit_sac"] = u / ups["gradkit sac"]
        res.add_row(**row)
    res.meta.update(hidden=list(hidden), batch=batch, n_updates=n_updates, rounds=rounds)
    res.add_note("DSAC-T does two distributional critics + target policy per iteration and the actor/temperature "
                 "only every 2nd iteration (delay_update=2); SAC updates the actor every iteration; TD3 (gradkit and "
                 "SB3) updates its actor every 2nd iteration (policy_delay=2).")
    return res
