"""Reproduction of DSAC-T's claims at CPU scale (``gradkit reproduce dsact``).

Default (~12 CPU-minutes; ``--jobs 2`` halves the wall time): Pendulum-v1 learning curves of
DSAC-T, DSAC-v1, SAC and TD3 under one data schedule (warm-up with random actions, then one gradient
iteration per env step), 10 000 env steps, seeds ``seed, seed+1, seed+2``, plus the reward-scale
experiment: DSAC-T, DSAC-v1 and SAC (the paper's comparison) on rewards x0.1 and x10 (the x1 runs
are the curves), reporting the *unscaled* return averaged over the seeds.  The reward-scale claim
is decided with its uncertainty: each agent's spread (max - min over scales of the seed-mean final
return) gets a standard error from the seed-to-seed variation of the two cells it compares, and
DSAC-T must be lower than each baseline by more than ``RS_K`` standard errors of the difference.  (At 5000 steps and one seed the
temperature transient from the paper's alpha_0 = e dominates the x0.1 runs: see the README.)

``--quick``: the three Pendulum curves only, shorter.  ``--full``: Hopper-v5 (MuJoCo) with
2x256 nets, the learning curves and the Q-estimation bias curve (critic mean minus the
discounted Monte-Carlo return on evaluation rollouts) -- hours of CPU.

Hyperparameters are the official DSAC-T Pendulum example's (64x64 ReLU nets, lr 1e-3 for
critic, actor and temperature, tau 0.05, batch 64, warm-up 1000) with UTD 1 in place of the
official 8 env steps per iteration (CPU budget); the same values are used for SAC.
"""

from __future__ import annotations

import time
from typing import Dict, List, Optional, Sequence

import numpy as np

from gradkit_core.results import Result, paired_beyond, progress as _progress

ALGOS = ("dsac-t", "dsac-v1", "sac", "td3")
RS_ALGOS = ("dsac-t", "dsac-v1", "sac")  # the reward-scale experiment (the paper's comparison)
FULL_ALGOS = ("dsac-t", "dsac-v1", "sac", "td3")
LABEL = {"dsac-t": "DSAC-T", "dsac-v1": "DSAC-v1", "sac": "SAC", "td3": "TD3"}
RS_K = 2.0  # the reward-scale claim needs a spread difference above RS_K standard errors

PENDULUM_HP = dict(hidden=(64, 64), activation="relu", lr_critic=1e-3, lr_actor=1e-3, lr_alpha=1e-3,
                   tau=0.05, batch_size=64, warmup=1000, env_steps_per_update=1, buffer_size=100_000)
MUJOCO_HP = dict(hidden=(256, 256), activation="gelu", lr_critic=3e-4, lr_actor=3e-4, lr_alpha=3e-4,
                 tau=0.005, batch_size=256, warmup=5000, env_steps_per_update=1, buffer_size=1_000_000)


def _train(algo: str, env_id: str, seed: int, steps: int, eval_every: int, eval_episodes: int,
           hp: Dict, reward_scale: float, q_bias_every: Optional[int], bar) -> Dict:
    import torch

    from .agent import _ALGOS

    torch.set_num_threads(1)
    if algo == "td3":  # no entropy temperature
        hp = {k: v for k, v in hp.items() if k != "lr_alpha"}
    agent = _ALGOS[algo](env_id, seed=seed, reward_scale=reward_scale, **hp)
    biases: List = []
    t0 = time.perf_counter()
    done = 0
    while done < steps:
        chunk = min(eval_every, steps - done)
        agent.learn(chunk)
        done += chunk
        m, s = agent.evaluate(eval_episodes)
        agent.eval_history.append((agent.num_timesteps, m, s))
        if q_bias_every and agent.num_timesteps % q_bias_every == 0:
            biases.append((agent.num_timesteps, agent.q_bias(n_episodes=3)["normalized_bias"]))
        bar.update(chunk)
    wall = time.perf_counter() - t0
    xs = [h[0] for h in agent.eval_history]
    ys = [h[1] for h in agent.eval_history]
    return dict(agent=agent, x=xs, y=ys, final=ys[-1], best=max(ys), wall=wall, bias=biases,
                updates=agent.n_updates)


def run(*, quick: bool = False, full: bool = False, out=None, seed: int = 0, progress: bool = True,
        steps: Optional[int] = None, seeds: Optional[Sequence[int]] = None, jobs: int = 1,
        resume: bool = False) -> Result:
    """Run the reproduction; ``steps`` / ``seeds`` override the env-step budget and seed list.

    ``jobs`` / ``resume``: run the independent (agent, reward scale, seed) runs in parallel processes
    and reuse the finished runs stored under ``out/runs``."""
    from pathlib import Path

    from gradkit_core.results import run_many

    if seeds is None:  # the reward-scale comparison needs seeds to average over; the others are 1-seed checks
        seeds = [seed] if (quick or full) else [seed, seed + 1, seed + 2]
    seeds = list(seeds)
    if full:
        return _run_full(out=out, seeds=seeds, progress=progress, steps=steps or 100_000, jobs=jobs, resume=resume)
    n_steps = steps or (4000 if quick else 10_000)
    eval_every = 1000 if quick else 500
    eval_episodes = 5
    scales = (1.0,) if quick else (0.1, 1.0, 10.0)
    res = Result("dsact", title=f"DSAC-T vs DSAC-v1 vs SAC on Pendulum-v1 ({n_steps} env steps, UTD 1, "
                                f"seeds {seeds})")
    res.meta.update(env="Pendulum-v1", steps=n_steps, seeds=seeds, hp=dict(PENDULUM_HP), scales=list(scales),
                    eval_every=eval_every, eval_episodes=eval_episodes)
    tasks = [dict(algo=algo, env_id="Pendulum-v1", seed=s, steps=n_steps, eval_every=eval_every,
                  eval_episodes=eval_episodes, hp=dict(PENDULUM_HP), reward_scale=scale, q_bias_every=None)
             for scale in scales for algo in ALGOS for s in seeds if scale == 1.0 or algo in RS_ALGOS]
    done = run_many(_train_record, tasks, jobs=jobs, cache_dir=Path(out) / "runs" if out is not None else None,
                    resume=resume, progress_bar=progress, desc="dsact reproduce runs")
    finals: Dict = {}
    per_seed: Dict = {}
    for scale in scales:
        for algo in ALGOS:
            runs = [r for t, r in zip(tasks, done) if t["algo"] == algo and t["reward_scale"] == scale]
            if not runs:
                continue
            curve = np.mean([r["y"] for r in runs], axis=0)
            final = float(np.mean([r["final"] for r in runs]))
            finals[(algo, scale)] = final
            per_seed[(algo, scale)] = [r["final"] for r in runs]
            res.add_row(method=LABEL[algo], reward_scale=scale, final_return=final,
                        final_std=float(np.std([r["final"] for r in runs])) if len(runs) > 1 else None,
                        best_return=float(np.mean([r["best"] for r in runs])),
                        updates=runs[0]["updates"], wall_s=float(np.mean([r["wall"] for r in runs])))
            res.add_curve("Pendulum-v1 return (reward x1)" if scale == 1.0 else f"return, reward x{scale:g}",
                          LABEL[algo], runs[0]["x"], curve)

    dsact = finals[("dsac-t", 1.0)]
    res.add_claim("DSAC-T reaches a mean evaluation return above -250 on Pendulum-v1", dsact > -250,
                  f"final {dsact:.1f} after {n_steps} env steps")
    others = max(finals[(a, 1.0)] for a in ALGOS if a != "dsac-t")
    res.add_claim("DSAC-T matches or beats DSAC-v1, SAC and TD3 (final return, within 25)", dsact >= others - 25,
                  ", ".join(f"{LABEL[a]} {finals[(a, 1.0)]:.1f}" for a in ALGOS))
    if len(scales) > 1:
        spread = {a: spread_with_se({s: per_seed[(a, s)] for s in scales}) for a in RS_ALGOS}
        for a in RS_ALGOS:
            res.add_row(method=LABEL[a], reward_scale="spread (max-min)", final_return=spread[a][0],
                        final_std=None, spread_se=spread[a][1])
        verdicts = {b: less_sensitive(spread["dsac-t"], spread[b], RS_K) for b in ("dsac-v1", "sac")}
        res.add_claim(f"DSAC-T's return is the least sensitive to the reward scale (x0.1, x1, x10): its spread is "
                      f"below DSAC-v1's and SAC's by more than {RS_K:g} standard errors",
                      all(v[0] for v in verdicts.values()),
                      "; ".join(f"{LABEL[a]} spread {spread[a][0]:.1f} ± {spread[a][1]:.1f}" for a in RS_ALGOS) + "; "
                      + "; ".join(f"{LABEL[b]} − DSAC-T = {v[1]:.1f} ± {v[2]:.1f} "
                                  f"({'decided' if v[0] else 'not decided'})" for b, v in verdicts.items()))
    else:
        res.add_note("--quick skips the reward-scale experiment (run without --quick)")
    res.add_note("UTD 1 (one gradient iteration per env step) for all agents instead of the official 1/8 "
                 "(Pendulum) or 1/20 (MuJoCo): CPU budget; same schedule for every agent.")
    res.add_note(f"{len(seeds)} seed(s) ({seeds}); returns are means over them, final_std their std; a spread's "
                 "spread_se = sqrt(se_max^2 + se_min^2) from the two cells it compares (se = std/sqrt(n))")
    return res


def spread_with_se(cells: Dict[float, Sequence[float]]):
    """``(spread, se)``: max - min over scales of the seed-mean final return, and its standard error
    ``sqrt(se_hi^2 + se_lo^2)`` from the two cells (``se = std(ddof=1)/sqrt(n)``; ``nan`` with one seed)."""
    means = {s: float(np.mean(v)) for s, v in cells.items()}
    ses = {s: (float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")) for s, v in cells.items()}
    hi, lo = max(means, key=means.get), min(means, key=means.get)
    return means[hi] - means[lo], float(np.hypot(ses[hi], ses[lo]))


def less_sensitive(a, b, k: float = RS_K):
    """``(holds, difference, se)``: is spread ``a`` below spread ``b`` by more than ``k`` standard errors?

    ``a`` and ``b`` are :func:`spread_with_se` pairs; an exact tie or an unknown error never holds."""
    diff, se = b[0] - a[0], float(np.hypot(a[1], b[1]))
    return bool(np.isfinite(se) and diff > k * se and diff > 0), diff, se


def _train_record(algo: str, env_id: str, seed: int, steps: int, eval_every: int, eval_episodes: int, hp: Dict,
                  reward_scale: float, q_bias_every: Optional[int], progress: bool = False) -> Dict:
    """One run as plain data (for :func:`gradkit_core.results.run_many`): curves, bias curve, timings."""
    bar = _progress(total=steps, desc=f"{algo} seed {seed}", enabled=progress)
    try:
        r = _train(algo, env_id, seed, steps, eval_every, eval_episodes, hp, reward_scale, q_bias_every, bar)
    finally:
        bar.close()
    r.pop("agent")
    return r


def _tail_mean(ys, frac: float = 0.2) -> float:
    """Mean of the evaluations in the last ``frac`` of training (less noisy than the last one alone)."""
    k = max(1, int(round(len(ys) * frac)))
    return float(np.mean(ys[-k:]))


def _abs_bias(bias) -> float:
    """Mean |normalised Q bias| over the evaluations of the second half of training."""
    vals = [b[1] for b in bias]
    return float(np.mean(np.abs(vals[len(vals) // 2:])))


def _run_full(*, out, seeds, progress, steps: int, jobs: int = 1, resume: bool = False) -> Result:
    from pathlib import Path

    from gradkit_core.results import run_many

    env_id = "Hopper-v5"
    eval_every = max(steps // 20, 1)
    res = Result("dsact", title=f"DSAC-T vs DSAC-v1 vs SAC vs TD3 on {env_id} ({steps} env steps, UTD 1, seeds {seeds})")
    res.meta.update(env=env_id, steps=steps, seeds=seeds, hp=dict(MUJOCO_HP))
    tasks = []
    for algo in FULL_ALGOS:
        hp = dict(MUJOCO_HP)
        if algo in ("sac", "td3"):  # the SAC and TD3 papers' ReLU networks
            hp["activation"] = "relu"
        tasks += [dict(algo=algo, env_id=env_id, seed=s, steps=steps, eval_every=eval_every, eval_episodes=5, hp=hp,
                       reward_scale=1.0, q_bias_every=eval_every) for s in seeds]
    done = run_many(_train_record, tasks, jobs=jobs, cache_dir=Path(out) / "runs" if out is not None else None,
                    resume=resume, progress_bar=progress, desc="dsact --full runs",
                    shared=dict(progress=progress and jobs == 1))
    finals, biases, tails, abs_biases = {}, {}, {}, {}
    for algo in FULL_ALGOS:
        runs = [r for t, r in zip(tasks, done) if t["algo"] == algo]
        finals[algo] = float(np.mean([r["final"] for r in runs]))
        tails[algo] = float(np.mean([_tail_mean(r["y"]) for r in runs]))
        bx = [b[0] for b in runs[0]["bias"]]
        by = np.mean([[b[1] for b in r["bias"]] for r in runs], axis=0)
        biases[algo] = float(np.mean(by[len(by) // 2:]))
        abs_biases[algo] = float(np.mean([_abs_bias(r["bias"]) for r in runs]))
        res.add_curve(f"{env_id} return", LABEL[algo], runs[0]["x"], np.mean([r["y"] for r in runs], axis=0))
        res.add_curve(f"{env_id} normalized Q bias", LABEL[algo], bx, by)
        for t, r in zip(tasks, done):
            if t["algo"] == algo:
                res.add_row(method=LABEL[algo], seed=t["seed"], final_return=r["final"],
                            last_20pct_return=_tail_mean(r["y"]), best_return=r["best"],
                            q_bias_second_half=float(np.mean([b[1] for b in r["bias"]][len(r["bias"]) // 2:])),
                            q_abs_bias_second_half=_abs_bias(r["bias"]), wall_s=r["wall"])
        if len(runs) > 1:
            res.add_row(method=LABEL[algo], seed="mean", final_return=finals[algo], last_20pct_return=tails[algo],
                        q_bias_second_half=biases[algo], q_abs_bias_second_half=abs_biases[algo],
                        wall_s=float(np.mean([r["wall"] for r in runs])))
    # every claim is a paired difference over seeds beyond 2 SE (gradkit_core.results.paired_beyond):
    # strict, and a one-seed run is undecided
    per_seed = {a: [r for t, r in zip(tasks, done) if t["algo"] == a] for a in FULL_ALGOS}
    final = {a: [r["final"] for r in per_seed[a]] for a in FULL_ALGOS}
    tail = {a: [_tail_mean(r["y"]) for r in per_seed[a]] for a in FULL_ALGOS}
    absb = {a: [_abs_bias(r["bias"]) for r in per_seed[a]] for a in FULL_ALGOS}
    for other in ("sac", "dsac-v1", "td3"):
        ok, how = paired_beyond(final["dsac-t"], final[other], RS_K)
        res.add_claim(f"DSAC-T's final return > {LABEL[other]}'s (paired over seeds, > 2 SE)", ok,
                      f"{finals['dsac-t']:.1f} vs {finals[other]:.1f} ({how})")
    best_other = max(("sac", "dsac-v1", "td3"), key=lambda a: tails[a])
    ok, how = paired_beyond(tail["dsac-t"], tail[best_other], RS_K)
    res.add_claim("DSAC-T's mean return over the last 20% of training > the best other agent's (paired, > 2 SE)", ok,
                  ", ".join(f"{LABEL[a]} {tails[a]:.1f}" for a in FULL_ALGOS) + f"; vs {LABEL[best_other]}: {how}")
    ok, how = paired_beyond(absb["sac"], absb["dsac-t"], RS_K)
    res.add_claim("|Q bias| of DSAC-T < |Q bias| of SAC (mean absolute normalised bias, second half; paired, > 2 SE)", ok,
                  f"{abs_biases['dsac-t']:.3f} vs {abs_biases['sac']:.3f} ({how}; signed means {biases['dsac-t']:+.3f} vs "
                  f"{biases['sac']:+.3f}: signed values cancel, so the claim uses absolute ones)")
    return res
